#!/usr/bin/env python3
"""Deployment benchmark: inference overhead of hardened models in onnxruntime, OpenVINO and tract.

What it measures. For each graph (the ImageNet-class graphs of fixtures/make_imagenet_graphs.py,
calibrated on their calib.npy, and the fixtures fixtures/{alexnet,vgg,resnet,mobilenetv3}.onnx on
fixtures/calib.npy) it writes, with the release CLI, every hardened form the CLI offers:
--granularity layer|channel|neuron x --mode zero|saturate (the --method presets are named forms
of these: fitact = channel/zero, ranger = layer/saturate, clipact = layer/zero; at start it
checks on the AlexNet fixture that all 18 method x granularity x mode combinations give one of
these 6 graphs), each with --activations all (the default) and, where the graph has
activations other than Relu, also --activations relu (skipped when it gives the same graph as
all, e.g. the VGG fixture's BatchNormalization, which no residual Add reads). It then times the original and every
form at each batch size (default 1 and 8; input: the first samples of the calibration data) in
  * onnxruntime (PyPI `onnxruntime`, CPU provider, default graph optimisation,
    intra_op_num_threads = inter_op_num_threads = 1);
  * OpenVINO (PyPI `openvino`, CPU plugin, INFERENCE_NUM_THREADS 1, PERFORMANCE_HINT LATENCY,
    NUM_STREAMS 1, the input reshaped to the static batch; INFERENCE_PRECISION_HINT f32 by default
    because this CPU (avx512_bf16) would otherwise run in bfloat16: --ov-precision default keeps
    the plugin's choice);
  * tract 0.23.9 (no Python API: a small Rust helper, embedded below, is written to
    --tract-dir and built with cargo on first use, ~7 min on 2 cores; --tract-bin uses a
    built one). Batch 1 only by default (--tract-batches): tract is 4-19x slower than
    onnxruntime here.
Per (graph, runtime, batch), all forms are loaded together; after a warm-up, each repetition
runs every form (in an order rotated by the repetition) ITERS times, ITERS chosen so that one
form takes >= --min-time s; medians over --reps repetitions. A form's overhead is
median(form) / median(original) - 1 of the same block (and, in the JSON, the median of the
per-repetition ratios and the ratio of the minima; --stat median,paired,min prints a table of
each, --from-json JSON prints them again from a saved run). Each form's outputs are compared with the original's on the same
input (bounds are calibrated on those samples, so they must agree) and every runtime with
onnxruntime. Model size overhead: hardened file size / original - 1, per form.

Output: a Markdown table to stdout (overhead per form, runtime and batch; the original's
latency; size overhead; then load errors and output mismatches) and a JSON file (--json,
default target/deployment/deployment.json) with every timing.

How long: hardening ~1-5 s a form (VGG-16 ~15 s: it writes 550 MB). Timing scales with the
graphs: on the 2-core machine, with the defaults (--reps 7, --min-time 0.2), ResNet-50 about
1 min per runtime and batch, VGG-16 about 3 min at batch 8, the fixtures seconds. The full run
(8 ImageNet graphs + 4 fixtures, onnxruntime + OpenVINO at batch 1 and 8, tract at batch 1)
takes about 1.5-2 hours; a quick run: --models resnet50.opset17,mobilenetv3 --runtimes ort
--batches 1 --reps 5 (about 2 minutes).

How to run (from the repository root; the benchmark is not part of CI):
  pip install onnx onnxruntime openvino torch torchvision
  cargo build --release
  python3 fixtures/make_imagenet_graphs.py            # target/imagenet-graphs/, ~2 min
  python3 benches/deployment.py [--bin target/release/fitact-onnx] [--graphs target/imagenet-graphs]
      [--models resnet50.opset17,vgg16.opset11,alexnet,...] [--runtimes ort,openvino,tract]
      [--batches 1,8] [--tract-batches 1] [--reps 7] [--min-time 0.2] [--forms channel/zero,...]
      [--activations all,relu] [--work target/deployment/work] [--json target/deployment/deployment.json]
      [--tract-bin PATH | --tract-dir target/deployment/tract-helper] [--ov-precision f32|bf16|default]
      [--stat median,paired,min] [--reuse]
  python3 benches/deployment.py --from-json target/deployment/deployment.json --stat min
Models are named by file stem: the fixtures `alexnet`, `vgg`, `resnet`, `mobilenetv3`; the
generated graphs `{arch}.opset{K}`. Default: every graph found.
"""

import argparse
import gc
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
FIXTURE_MODELS = ["alexnet", "vgg", "resnet", "mobilenetv3"]
GRANULARITIES = ["layer", "channel", "neuron"]
MODES = ["zero", "saturate"]
METHODS = ["fitact", "ranger", "clipact"]
PRESET = {("channel", "zero"): "fitact", ("layer", "saturate"): "ranger", ("layer", "zero"): "clipact"}
# Operators (besides Relu) that `--activations all` may bound: where a graph has one, the
# benchmark also writes the `--activations relu` forms.
OTHER_ACTIVATION_OPS = {"LeakyRelu", "PRelu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh",
                        "Erf", "Gelu", "BatchNormalization", "LayerNormalization", "InstanceNormalization"}
RUNTIME_NAMES = {"ort": "onnxruntime", "openvino": "OpenVINO", "tract": "tract"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Models and forms


def discover(args):
    """[(name, path, calib)] of the graphs to benchmark, in a stable order."""
    found = []
    if args.graphs and os.path.isdir(args.graphs):
        calib = os.path.join(args.graphs, "calib.npy")
        for f in sorted(os.listdir(args.graphs)):
            if f.endswith(".onnx") and os.path.exists(calib):
                found.append((f[:-5], os.path.join(args.graphs, f), calib))
    for name in FIXTURE_MODELS:
        path = os.path.join(FIXTURES, f"{name}.onnx")
        if os.path.exists(path):
            found.append((name, path, os.path.join(FIXTURES, "calib.npy")))
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        by_name = {n: (n, p, c) for n, p, c in found}
        missing = [m for m in wanted if m not in by_name]
        if missing:
            sys.exit(f"unknown model(s) {', '.join(missing)}; found: {', '.join(by_name) or 'none'} "
                     f"(run fixtures/make_imagenet_graphs.py --out {args.graphs}?)")
        found = [by_name[m] for m in wanted]
    return found


def form_label(gran, mode, acts, emission="plain"):
    label = f"{gran}/{mode}"
    if emission != "plain":
        label += f" {emission}"
    if acts != "all":
        label += f" [{acts}]"
    return label


def graph_digest(path):
    """Hash of the graph only (metadata_props name the method, the graph does not depend on it)."""
    m = onnx.load(path)
    return hashlib.sha256(m.graph.SerializeToString()).hexdigest()[:16]


def harden(binary, src, dst, calib, method, gran, mode, acts, reuse, emission="plain"):
    report = dst + ".json"
    if reuse and os.path.exists(dst) and os.path.exists(report):
        with open(report) as f:
            return json.load(f), None
    cmd = [binary, "--quiet", "harden", src, dst, "--calib", calib, "--method", method,
           "--granularity", gran, "--mode", mode, "--activations", acts, "--report", report,
           "--emission", emission]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return None, f"exit {proc.returncode}: {proc.stderr.strip()[:500]}"
    with open(report) as f:
        rep = json.load(f)
    rep["_wall_seconds"] = wall
    with open(report, "w") as f:
        json.dump(rep, f)
    return rep, None


def check_method_presets(binary, work):
    """Hardens the AlexNet fixture with all 18 method x granularity x mode combinations and
    groups them by graph: returns {(gran, mode): [methods giving that graph]} and whether each
    (gran, mode) is one graph whatever the method."""
    src = os.path.join(FIXTURES, "alexnet.onnx")
    calib = os.path.join(FIXTURES, "calib.npy")
    if not os.path.exists(src):
        return None
    d = os.path.join(work, "_method_check")
    os.makedirs(d, exist_ok=True)
    digests = {}
    for method in METHODS:
        for gran in GRANULARITIES:
            for mode in MODES:
                out = os.path.join(d, f"{method}.{gran}.{mode}.onnx")
                rep, err = harden(binary, src, out, calib, method, gran, mode, "all", False)
                digests[(method, gran, mode)] = err or graph_digest(out)
    result = {}
    for gran in GRANULARITIES:
        for mode in MODES:
            ds = {digests[(m, gran, mode)] for m in METHODS}
            result[f"{gran}/{mode}"] = {"methods": METHODS, "distinct_graphs": len(ds)}
    distinct_all = len(set(digests.values()))
    return {"per_form": result, "distinct_graphs_over_18": distinct_all}


def make_forms(args, name, path, calib, work):
    """Writes the hardened forms of one model; returns its form records (original first)."""
    model = onnx.load(path, load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    others = sorted(ops & OTHER_ACTIVATION_OPS)
    acts_list = [a for a in args.activations.split(",") if a]
    if not others:
        acts_list = [a for a in acts_list if a == "all"] or ["all"]
    base_size = os.path.getsize(path)
    forms = [{"label": "original", "path": path, "bytes": base_size}]
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    wanted = set(f.strip() for f in args.forms.split(",")) if args.forms else None
    same_as_all = []
    emissions = [e.strip() for e in args.emissions.split(",") if e.strip()]
    combos = [(g, m, e) for g in GRANULARITIES for m in MODES for e in emissions
              if not wanted or f"{g}/{m}" in wanted]
    for acts in acts_list:
        first = True
        for gran, mode, emission in combos:
            label = form_label(gran, mode, acts, emission)
            out = os.path.join(d, f"{gran}-{mode}-{acts}-{emission}.onnx")
            method = PRESET.get((gran, mode), "fitact")
            rep, err = harden(args.bin, path, out, calib, method, gran, mode, acts, args.reuse, emission)
            if first and acts != "all" and not err:
                # A list that bounds the same graph as `all` (e.g. BatchNormalization kept but
                # read by no residual Add): its forms would be duplicates, skip them.
                twin = next((f for f in forms if f.get("activations") == "all" and f.get("granularity") == gran
                             and f.get("mode") == mode and f.get("emission") == emission and "path" in f), None)
                if twin and graph_digest(twin["path"]) == graph_digest(out):
                    log(f"  {name}: --activations {acts} gives the same graph as all; its forms are skipped")
                    same_as_all.append(acts)
                    break
            first = False
            rec = {"label": label, "granularity": gran, "mode": mode, "activations": acts, "emission": emission,
                   "method_preset": PRESET.get((gran, mode)),
                   "flags": f"--method {method} --granularity {gran} --mode {mode} --activations {acts} "
                            f"--emission {emission}"}
            if err:
                log(f"  {name} {label}: harden failed: {err}")
                rec["error"] = err
            else:
                size = os.path.getsize(out) + (os.path.getsize(out + ".data") if os.path.exists(out + ".data") else 0)
                rec.update(path=out, bytes=size, size_overhead=size / base_size - 1,
                           activations_bounded=len(rep.get("activations", [])),
                           bound_values=int(sum(np.prod(a.get("bound_shape") or [1]) for a in rep.get("activations", []))),
                           harden_seconds=rep.get("_wall_seconds"))
                kinds = {}
                for a in rep.get("activations", []):
                    kinds[a.get("kind")] = kinds.get(a.get("kind"), 0) + 1
                rec["kinds"] = kinds
                log(f"  {name} {label}: {rec['activations_bounded']} activations, "
                    f"size +{rec['size_overhead'] * 100:.3f}%"
                    + (f", {rec['harden_seconds']:.1f} s" if rec.get("harden_seconds") else ""))
            forms.append(rec)
    info = {"opset": opset, "other_activation_ops": others, "nodes": len(model.graph.node),
            "relus": sum(1 for n in model.graph.node if n.op_type == "Relu"), "bytes": base_size,
            "activations_same_as_all": same_as_all}
    return forms, info


# ---------------------------------------------------------------------------------------------
# Runtimes: each returns, per form, a runner (run() -> first output) or an error string.


def ort_runner(path, x):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)[0]


_OV_CORE = None


def ov_runner(path, x, precision):
    import openvino as ov
    global _OV_CORE
    if _OV_CORE is None:
        _OV_CORE = ov.Core()
    model = _OV_CORE.read_model(path)
    model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
    config = {"INFERENCE_NUM_THREADS": "1", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = _OV_CORE.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    tensor = ov.Tensor(np.ascontiguousarray(x))

    def run():
        request.infer({0: tensor})
        return request.get_output_tensor(0).data.copy()

    run.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return run


def time_block(runners, reps, min_time):
    """Interleaved timing of callables (None = failed form). Returns (iters, [per-rep seconds])."""
    alive = [i for i, r in enumerate(runners) if r is not None]
    for i in alive:  # warm-up
        runners[i]()
    samples = []
    for _ in range(3):
        t0 = time.perf_counter()
        runners[alive[0]]()
        samples.append(time.perf_counter() - t0)
    est = float(np.median(samples))
    iters = max(1, int(np.ceil(min_time / max(est, 1e-6))))
    times = [[] for _ in runners]
    for rep in range(reps):
        for k in range(len(alive)):
            i = alive[(k + rep) % len(alive)]
            start = time.perf_counter()
            for _ in range(iters):
                runners[i]()
            times[i].append((time.perf_counter() - start) / iters)
    return iters, times


def python_runtime_block(runtime, forms, x, args, reference):
    runners, errors, diffs, notes = [], [], [], {}
    for f in forms:
        if "path" not in f:
            runners.append(None)
            errors.append(f.get("error", "not hardened"))
            diffs.append(None)
            continue
        try:
            run = ort_runner(f["path"], x) if runtime == "ort" else ov_runner(f["path"], x, args.ov_precision)
            y = run()
            if getattr(run, "precision", None):
                notes["precision"] = run.precision
            runners.append(run)
            errors.append(None)
            diffs.append(float(np.max(np.abs(y - reference))) if y.shape == reference.shape else float("inf"))
        except Exception as e:  # a form that does not load or run: reported, not fatal
            runners.append(None)
            errors.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}")
            diffs.append(None)
    if runners[0] is None:
        return {"error": f"original does not load: {errors[0]}", "errors": errors}
    iters, times = time_block(runners, args.reps, args.min_time)
    del runners
    gc.collect()
    return {"iters": iters, "times": times, "errors": errors, "max_abs_diff_vs_ort_original": diffs, **notes}


TRACT_CARGO_TOML = """[package]
name = "fitact-deployment-tract"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
tract-onnx = { version = "=0.23.9", default-features = false }
tract-core = "=0.23.9"
"""


TRACT_MAIN_RS = r'''//! Times ONNX models in tract for benches/deployment.py (written and built by it).
//! Usage: fitact-deployment-tract INPUT.f32 DIMS REPS MIN_TIME MODEL...
//! INPUT.f32: raw little-endian float32 of shape DIMS (e.g. 8,3,224,224; DIMS[0] is the batch).
//! Each model is loaded with that input fact, optimized, run once (warm-up); the first loadable
//! model's warm-up time sets ITERS = ceil(MIN_TIME / t). Then REPS repetitions, in each every
//! model (in an order rotated by the repetition) runs ITERS times. Prints one JSON line:
//! {"iters": N, "models": [{"path", "error" | "seconds": [per-run seconds of each rep],
//!  "max_abs_diff_vs_first": d}]}; the first model is the reference for the output difference.
use std::time::Instant;
use tract_onnx::prelude::*;

fn load(path: &str, shape: &[usize]) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
        .model_for_path(path)?;
    model.set_input_fact(0, f32::fact(shape).into())?;
    model.into_optimized()?.into_runnable()
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: {} INPUT.f32 DIMS REPS MIN_TIME MODEL...", args[0]);
        std::process::exit(2);
    }
    let bytes = std::fs::read(&args[1]).expect("reading INPUT.f32");
    let shape: Vec<usize> = args[2].split(',').map(|d| d.parse().expect("DIMS")).collect();
    let reps: usize = args[3].parse().expect("REPS");
    let min_time: f64 = args[4].parse().expect("MIN_TIME");
    let paths = &args[5..];
    let data: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "INPUT.f32 does not match DIMS");
    let input: TValue = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), data)
        .expect("shape")
        .into_tensor()
        .into_tvalue();
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    let mut diffs = Vec::new();
    let mut reference: Option<Vec<f32>> = None;
    let mut iters = 0usize;
    for p in paths {
        let result = load(p, &shape).and_then(|plan| {
            let start = Instant::now();
            let out = plan.run(tvec!(input.clone()))?;
            let elapsed = start.elapsed().as_secs_f64();
            let values: Vec<f32> = out[0].to_plain_array_view::<f32>()?.iter().copied().collect();
            Ok((plan, elapsed, values))
        });
        match result {
            Ok((plan, elapsed, values)) => {
                if iters == 0 {
                    iters = ((min_time / elapsed).ceil() as usize).max(1);
                }
                let diff = match &reference {
                    None => {
                        reference = Some(values);
                        0.0f32
                    }
                    Some(r) if r.len() == values.len() => {
                        r.iter().zip(&values).map(|(a, b)| (a - b).abs()).fold(0.0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
                    }
                    Some(_) => f32::INFINITY,
                };
                diffs.push(diff);
                plans.push(Some(plan));
                errors.push(None);
            }
            Err(e) => {
                diffs.push(f32::NAN);
                plans.push(None);
                errors.push(Some(format!("{e:#}")));
            }
        }
    }
    let mut times = vec![Vec::new(); paths.len()];
    for rep in 0..reps {
        for k in 0..paths.len() {
            let i = (k + rep) % paths.len();
            if let Some(plan) = &plans[i] {
                let start = Instant::now();
                for _ in 0..iters {
                    plan.run(tvec!(input.clone())).expect("tract run");
                }
                times[i].push(start.elapsed().as_secs_f64() / iters as f64);
            }
        }
    }
    let entries: Vec<String> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| match &errors[i] {
            Some(e) => format!("{{\"path\": \"{}\", \"error\": \"{}\"}}", esc(p), esc(e)),
            None => format!(
                "{{\"path\": \"{}\", \"max_abs_diff_vs_first\": {}, \"seconds\": [{}]}}",
                esc(p),
                if diffs[i].is_finite() { format!("{:e}", diffs[i]) } else { "null".to_string() },
                times[i].iter().map(|t| format!("{t:.6e}")).collect::<Vec<_>>().join(", ")
            ),
        })
        .collect();
    println!("{{\"iters\": {}, \"models\": [{}]}}", iters.max(1), entries.join(", "));
}
'''


def tract_binary(args):
    if args.tract_bin:
        return args.tract_bin
    d = args.tract_dir
    os.makedirs(os.path.join(d, "src"), exist_ok=True)
    for rel, text in (("Cargo.toml", TRACT_CARGO_TOML), ("src/main.rs", TRACT_MAIN_RS)):
        p = os.path.join(d, rel)
        if not os.path.exists(p) or open(p).read() != text:
            with open(p, "w") as f:
                f.write(text)
    binary = os.path.join(d, "target", "release", "fitact-deployment-tract")
    log(f"building the tract helper in {d} (cargo build --release; ~7 min from clean)")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", os.path.join(d, "Cargo.toml")],
                   check=True)
    return binary


def tract_block(binary, forms, x, args, work):
    paths = [f.get("path") for f in forms]
    if paths[0] is None:
        return {"error": "original missing"}
    runnable = [p for p in paths if p]
    raw = os.path.join(work, "_tract_input.f32")
    np.ascontiguousarray(x, dtype="<f4").tofile(raw)
    dims = ",".join(str(d) for d in x.shape)
    proc = subprocess.run([binary, raw, dims, str(args.reps), str(args.min_time), *runnable],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"tract helper exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    out = json.loads(proc.stdout)
    by_path = {m["path"]: m for m in out["models"]}
    times, errors, diffs = [], [], []
    for f, p in zip(forms, paths):
        m = by_path.get(p) if p else None
        if m is None:
            times.append([]); errors.append(f.get("error", "not hardened")); diffs.append(None)
        elif "error" in m:
            times.append([]); errors.append(m["error"][:400]); diffs.append(None)
        else:
            times.append(m["seconds"]); errors.append(None); diffs.append(m.get("max_abs_diff_vs_first"))
    if not times[0]:
        return {"error": f"original does not load in tract: {errors[0]}", "errors": errors}
    return {"iters": out["iters"], "times": times, "errors": errors, "max_abs_diff_vs_tract_original": diffs}


def summarise(block):
    """Adds medians and ratios to a timing block."""
    if "times" not in block:
        return block
    med = [float(np.median(t)) if t else None for t in block["times"]]
    base = med[0]
    block["median_seconds"] = med
    block["ratio"] = [m / base if m else None for m in med]
    paired = []
    for t in block["times"]:
        if not t:
            paired.append(None)
            continue
        r = [a / b for a, b in zip(t, block["times"][0])]
        paired.append({"median": float(np.median(r)), "min": float(np.min(r)), "max": float(np.max(r))})
    block["paired_ratio"] = paired
    return block


def pct(r):
    return "-" if r is None else f"{(r - 1) * 100:+.1f}%"


STATS = {
    "median": "ratio of the medians",
    "paired": "median of the per-repetition ratios (form / original of the same repetition)",
    "min": "ratio of the minima (the least disturbed repetition: robust when other work shares the machine)",
}


def block_ratio(b, i, stat):
    t, t0 = b["times"][i], b["times"][0]
    if not t or not t0:
        return None
    if stat == "min":
        return min(t) / min(t0)
    if stat == "paired":
        return float(np.median([a / c for a, c in zip(t, t0)]))
    return float(np.median(t)) / float(np.median(t0))


def markdown(results, columns, stat="median"):
    lines = []
    head = ["model", "form", "bounded", "size"] + [c[2] for c in columns]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    problems = []
    for name, res in results.items():
        forms = res["forms"]
        row = [f"**{name}**", f"original ({res['info']['relus']} Relu, opset {res['info']['opset']}, "
               f"{res['info']['bytes'] / 1e6:.1f} MB)", "", ""]
        for key, _, _ in columns:
            b = res["timing"].get(key)
            if b is None:
                row.append("")
            elif "times" in b:
                t0 = b["times"][0]
                row.append(f"{(min(t0) if stat == 'min' else float(np.median(t0))) * 1e3:.2f} ms")
            else:
                row.append("fails")
                problems.append(f"{name} {key}: {b.get('error')}")
        lines.append("| " + " | ".join(row) + " |")
        for i, f in enumerate(forms[1:], start=1):
            tag = f" ({f['method_preset']})" if f.get("method_preset") and f.get("activations") == "all" else ""
            row = ["", f["label"] + tag, str(f.get("activations_bounded", "-")),
                   f"+{f['size_overhead'] * 100:.2f}%" if "size_overhead" in f else "-"]
            for key, _, _ in columns:
                b = res["timing"].get(key)
                if b is None:
                    row.append("")
                elif "times" in b:
                    r = block_ratio(b, i, stat)
                    if r is None:
                        row.append("fails")
                        problems.append(f"{name} {f['label']} {key}: {b['errors'][i]}")
                    else:
                        row.append(pct(r))
                    d = (b.get("max_abs_diff_vs_ort_original") or b.get("max_abs_diff_vs_tract_original") or [None] * len(forms))[i]
                    if d is not None and d > args_tol(b, res):
                        problems.append(f"{name} {f['label']} {key}: max |output - original| = {d:.3g}")
                else:
                    row.append("fails" if "error" in b else "")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines), problems


def args_tol(block, res):
    # Outputs of an untrained ImageNet net are O(1); a bound hit by a sample changes them a lot.
    return 1e-2 if "float32" in str(block.get("precision", "float32")) else 0.5


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "fitact-onnx"))
    p.add_argument("--graphs", default=os.path.join(ROOT, "target", "imagenet-graphs"),
                   help="directory written by fixtures/make_imagenet_graphs.py")
    p.add_argument("--models", help="comma-separated model names (default: all found)")
    p.add_argument("--runtimes", default="ort,openvino,tract")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--tract-batches", default="1", help="batches timed in tract (a subset of --batches)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per form per repetition (at least one run)")
    p.add_argument("--forms", help="comma-separated granularity/mode forms, e.g. channel/zero,layer/saturate (default: all 6)")
    p.add_argument("--emissions", default="plain,relu-first,fold,fold-threshold",
                   help="--emission values to harden with (each a row; plain: the forms before the overhead work)")
    p.add_argument("--activations", default="all,relu", help="--activations values to harden with (relu only where other activations exist)")
    p.add_argument("--ov-precision", default="f32", help="OpenVINO INFERENCE_PRECISION_HINT: f32, bf16 or default")
    p.add_argument("--work", default=os.path.join(ROOT, "target", "deployment", "work"))
    p.add_argument("--reuse", action="store_true", help="reuse hardened forms already in --work")
    p.add_argument("--json", default=os.path.join(ROOT, "target", "deployment", "deployment.json"))
    p.add_argument("--tract-bin", help="a built tract helper (default: build it in --tract-dir)")
    p.add_argument("--tract-dir", default=os.path.join(ROOT, "target", "deployment", "tract-helper"))
    p.add_argument("--skip-method-check", action="store_true")
    p.add_argument("--stat", default="median", help="statistic(s) of the tables, comma-separated: "
                   + "; ".join(f"{k} = {v}" for k, v in STATS.items()))
    p.add_argument("--from-json", help="print the tables of an earlier run's JSON and exit")
    args = p.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            out = json.load(f)
        out.setdefault("seconds", 0.0)
        out["env"].setdefault("loadavg_end", out["env"]["loadavg_start"])
        for stat in args.stat.split(","):
            print_report(out, out["config"]["reps"], stat)
        return
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    for r in runtimes:
        if r not in RUNTIME_NAMES:
            sys.exit(f"unknown runtime {r!r}: ort, openvino, tract")
    batches = [int(b) for b in args.batches.split(",")]
    tract_batches = [int(b) for b in args.tract_batches.split(",") if int(b) in batches] if args.tract_batches else []
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} is not an executable; run cargo build --release first")
    models = discover(args)
    if not models:
        sys.exit("no models found")
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    started = time.time()
    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
           if os.path.exists("/proc/cpuinfo") else "?", "loadavg_start": os.getloadavg(),
           "fitact_onnx": subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout.strip()}
    import onnxruntime
    env["onnxruntime"] = onnxruntime.__version__
    if "openvino" in runtimes:
        import openvino
        env["openvino"] = openvino.__version__
    tract_bin = None
    if "tract" in runtimes:
        tract_bin = tract_binary(args)
        env["tract"] = "0.23.9"
    config = {k: v for k, v in vars(args).items()}
    config.update(runtimes=runtimes, batches=batches, tract_batches=tract_batches)
    out = {"config": config, "env": env, "models": {}}
    if not args.skip_method_check:
        out["method_check"] = check_method_presets(args.bin, args.work)
        log(f"method presets: {json.dumps(out['method_check'])}")
    columns = []
    for r in runtimes:
        for b in (tract_batches if r == "tract" else batches):
            columns.append((f"{r}/b{b}", r, f"{RUNTIME_NAMES[r]} b{b}"))
    for name, path, calib in models:
        log(f"== {name}: hardening")
        t0 = time.time()
        forms, info = make_forms(args, name, path, calib, args.work)
        res = {"path": path, "calib": calib, "info": info, "forms": forms, "timing": {},
               "harden_block_seconds": time.time() - t0}
        x_all = np.load(calib, mmap_mode="r")
        for key, runtime, _ in columns:
            b = int(key.split("/b")[1])
            x = np.ascontiguousarray(x_all[:b], dtype=np.float32)
            t1 = time.time()
            la = os.getloadavg()[0]
            # The onnxruntime original's output on this input: the reference every runtime and
            # every form is compared with (bounds are calibrated on these samples).
            reference = ort_runner(path, x)()
            if runtime == "tract":
                block = tract_block(tract_bin, forms, x, args, args.work)
            else:
                block = python_runtime_block(runtime, forms, x, args, reference)
            block = summarise(block)
            block["seconds"] = time.time() - t1
            block["loadavg_1min_start"] = la
            res["timing"][key] = block
            ratios = " ".join(f"{f['label']}={pct(r)}" for f, r in zip(forms[1:], (block.get("ratio") or [None] * len(forms))[1:]))
            base = block.get("median_seconds", [None])[0]
            log(f"  {key}: original {base * 1e3 if base else float('nan'):.2f} ms, iters {block.get('iters')}, "
                f"{block['seconds']:.0f} s; {ratios}" + (f"; ERROR {block['error']}" if "error" in block else ""))
            gc.collect()
        out["models"][name] = res
        with open(args.json, "w") as f:  # after every model, so an interrupted run keeps its data
            json.dump(out, f, indent=1)
    env["loadavg_end"] = os.getloadavg()
    out["seconds"] = time.time() - started
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    for stat in args.stat.split(","):
        print_report(out, args.reps, stat)


def print_report(out, reps, stat="median"):
    env, config = out["env"], out["config"]
    runtimes = config["runtimes"]
    columns = []
    for r in runtimes:
        for b in (config["tract_batches"] if r == "tract" else config["batches"]):
            columns.append((f"{r}/b{b}", r, f"{RUNTIME_NAMES[r]} b{b}"))
    table, problems = markdown(out["models"], columns, stat)
    print(f"# Deployment overhead: hardened / original - 1 ({STATS[stat]}; {reps} interleaved repetitions, "
          f"1 thread; original row: its {'minimum' if stat == 'min' else 'median'} latency per run)\n")
    print(f"fitact-onnx: {env['fitact_onnx']}; onnxruntime {env['onnxruntime']}"
          + (f"; OpenVINO {env.get('openvino')} (precision {config['ov_precision']})" if "openvino" in runtimes else "")
          + ("; tract 0.23.9" if "tract" in runtimes else "")
          + f"; {env['cpu']}, {env['cpus']} cores; load average {env['loadavg_start'][0]:.1f} -> {env['loadavg_end'][0]:.1f}; "
          f"{out['seconds'] / 60:.1f} min\n")
    print("Forms: granularity/mode (method preset); [relu] = `--activations relu`, otherwise `all`. "
          "bounded = activations bounded; size = file size overhead.\n")
    print(table)
    print("\nModel size overhead per granularity (file size, hardened / original - 1; zero mode, "
          "--activations all; every form's is in the main table; at layer granularity it is mostly the "
          "emitted nodes' names):\n")
    print("| model | activations | layer | channel | neuron |")
    print("|---|---|---|---|---|")
    for name, res in out["models"].items():
        by = {(f.get("granularity"), f.get("mode"), f.get("activations")): f for f in res["forms"][1:]}
        cells = []
        for g in GRANULARITIES:
            f = by.get((g, "zero", "all"))
            cells.append(f"+{f['size_overhead'] * 100:.2f}%" if f and "size_overhead" in f else "-")
        n = next((f.get("activations_bounded") for f in res["forms"][1:] if f.get("activations") == "all"), "-")
        print(f"| {name} | {n} | " + " | ".join(cells) + " |")
    if "method_check" in out and out["method_check"]:
        mc = out["method_check"]
        same = all(v["distinct_graphs"] == 1 for v in mc["per_form"].values())
        print(f"\nMethod presets: the 18 method x granularity x mode combinations give "
              f"{mc['distinct_graphs_over_18']} distinct graphs on the AlexNet fixture"
              + (" (the method does not change the graph once granularity and mode are given)." if same else
                 f"; per form: {json.dumps(mc['per_form'])}"))
    if problems:
        print("\nProblems:")
        for line in problems:
            print(f"- {line}")
    print(f"\nJSON: {config['json']}")


if __name__ == "__main__":
    main()
