#!/usr/bin/env python3
"""onnxruntime side of the fitact-onnx benchmarks.

(a) Inference overhead of hardened models in onnxruntime: for each fixture model it writes
    four hardened variants with the release CLI (fitact/channel, fitact/neuron, clipact/layer,
    ranger/layer; calibrated on fixtures/calib.npy), checks they give the original's logits on
    the calibration samples, then times onnxruntime sessions (default graph optimisation
    level, intra_op_num_threads=1 and inter_op_num_threads=1 so runs are comparable and match
    tract's single thread) at batch 64 over the 512 calibration samples and at batch 1 over
    the first 128. Variants alternate inside each repetition; medians; ratios to the original.

(b) Calibration cost against onnxruntime's own calibrator:
    onnxruntime.quantization.calibrate.create_calibrator(model, ["Relu"], MinMax) with a
    CalibrationDataReader that feeds calib.npy in batches of 64 (the calibrator runs whatever
    batch the reader returns; the fixtures have a dynamic batch). Timed: setup
    (create_calibrator: shape inference, augmenting the graph with ReduceMin/ReduceMax per
    tensor, writing it, creating the session) and collect_data + compute_data. Note that
    op_types_to_calibrate=["Relu"] calibrates the inputs *and* outputs of every Relu, and
    MinMax gives one (min, max) per tensor (or per channel with per_channel=True), where
    fitact-onnx computes one max per neuron of every Relu output. Its session is recreated
    with one intra-op thread (keeping the calibrator's ORT_DISABLE_ALL level) to match tract.
    Our side, in the same run: wall time of `fitact-onnx harden --method fitact` and the
    `calibration.seconds` of its report (load + optimize in its engine + all batches + max fold).

Usage: python3 benches/ort.py --bin target/release/fitact-onnx [--models alexnet,vgg,resnet]
       [--reps 15] [--calib-reps 5] [--extra-dir DIR] [--skip-inference] [--skip-calibration]
Prints human-readable lines and `RESULT ...` lines that benches/run.sh tabulates.
Takes about 1 to 3 minutes for the three fixtures.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization.calibrate import (
    CalibrationDataReader,
    CalibrationMethod,
    create_calibrator,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
VARIANTS = [
    ("fitact/channel", ["--method", "fitact", "--granularity", "channel"]),
    ("fitact/neuron", ["--method", "fitact", "--granularity", "neuron"]),
    ("clipact/layer", ["--method", "clipact", "--granularity", "layer"]),
    ("ranger/layer", ["--method", "ranger", "--granularity", "layer"]),
]


def session(path, level=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if level is not None:
        so.graph_optimization_level = level
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def run_all(sess, x, batch, keep=False):
    name = sess.get_inputs()[0].name
    outs = []
    for start in range(0, len(x), batch):
        y = sess.run(None, {name: x[start : start + batch]})[0]
        if keep:
            outs.append(y)
    return np.concatenate(outs) if keep else None


def harden(binary, model, out, calib, flags, report):
    cmd = [binary, "--quiet", "harden", model, out, "--calib", calib, "--report", report, *flags]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    with open(report) as f:
        return wall, json.load(f)


def inference(args, name, model, calib, x, work):
    paths = [("original", model)]
    for label, flags in VARIANTS:
        out = os.path.join(work, f"{name}.{label.replace('/', '-')}.onnx")
        harden(args.bin, model, out, calib, flags, out + ".json")
        paths.append((label, out))
    if args.extra_dir:
        for f in sorted(os.listdir(args.extra_dir)):
            if f.startswith(name + ".") and f.endswith(".onnx"):
                paths.append((f[len(name) + 1 : -5], os.path.join(args.extra_dir, f)))
    sessions = [(label, session(p)) for label, p in paths]
    reference = run_all(sessions[0][1], x, 64, keep=True)
    for label, s in sessions[1:]:
        diff = np.abs(run_all(s, x, 64, keep=True) - reference).max()
        print(f"## {name} {label}: max |logit - original| on calib = {diff:.3g}")
    results = []
    for batch_label, count, batch in (("batch64", len(x), 64), ("batch1", min(128, len(x)), 1)):
        xs = x[:count]
        times = [[] for _ in sessions]
        for rep in range(args.reps):
            for k in range(len(sessions)):
                i = (k + rep) % len(sessions)
                start = time.perf_counter()
                run_all(sessions[i][1], xs, batch)
                times[i].append(time.perf_counter() - start)
        base = float(np.median(times[0]))
        print(f"{name} {batch_label} ({count} samples): original {base * 1e3:.1f} ms "
              f"({base * 1e3 / count:.3f} ms/sample)")
        for i, (label, _) in enumerate(sessions[1:], start=1):
            t = float(np.median(times[i]))
            print(f"  {label:<15} {t * 1e3:9.1f} ms  x{t / base:.3f}")
            results.append(f"RESULT ort_inference {name} {batch_label} {label} ratio={t / base:.3f}")
    return results


class Reader(CalibrationDataReader):
    def __init__(self, input_name, x, batch):
        self.batches = [{input_name: x[i : i + batch]} for i in range(0, len(x), batch)]
        self.index = 0

    def get_next(self):
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return self.batches[self.index - 1]


def ort_calibrate(model, x, work, per_channel):
    """One full onnxruntime MinMax calibration; returns (setup s, collect+compute s, ranges)."""
    augmented = os.path.join(work, "augmented.onnx")
    start = time.perf_counter()
    calibrator = create_calibrator(
        model,
        op_types_to_calibrate=["Relu"],
        augmented_model_path=augmented,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"per_channel": per_channel},
    )
    # Same optimisation level as the calibrator's own session, one thread like tract.
    calibrator.infer_session = session(augmented, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    setup = time.perf_counter() - start
    input_name = calibrator.infer_session.get_inputs()[0].name
    reader = Reader(input_name, x, 64)
    start = time.perf_counter()
    calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    collect = time.perf_counter() - start
    return setup, collect, ranges


def calibration(args, name, model, calib, x, work):
    relus = [n for n in onnx.load(model).graph.node if n.op_type == "Relu"]
    out = os.path.join(work, f"{name}.calib-bench.onnx")
    report = out + ".json"
    harden(args.bin, model, out, calib, ["--method", "fitact"], report)  # warm-up
    ours_wall, ours_calib, rep = [], [], None
    ort_setup = {False: [], True: []}
    ort_collect = {False: [], True: []}
    ranges = None
    ort_calibrate(model, x, work, False)  # warm-up
    for _ in range(args.calib_reps):
        wall, rep = harden(args.bin, model, out, calib, ["--method", "fitact"], report)
        ours_wall.append(wall)
        ours_calib.append(rep["calibration"]["seconds"])
        for per_channel in (False, True):
            setup, collect, r = ort_calibrate(model, x, work, per_channel)
            ort_setup[per_channel].append(setup)
            ort_collect[per_channel].append(collect)
            if not per_channel:
                ranges = r
    # Sanity: onnxruntime's per-tensor max of each Relu output against our calibrated max.
    worst = 0.0
    for act in rep["activations"]:
        lo, hi = ranges[act["output"]].range_value
        ours = act["calibrated_max"]
        worst = max(worst, abs(float(np.max(hi)) - ours) / max(abs(ours), 1e-12))
    tensors = len(ranges.keys())
    ow, oc = float(np.median(ours_wall)), float(np.median(ours_calib))
    print(f"## {name}: {len(relus)} Relus; onnxruntime calibrates {tensors} tensors (Relu inputs "
          f"and outputs); max relative difference of the Relu-output maxima: {worst:.2g}")
    print(f"ours   harden wall {ow * 1e3:8.1f} ms   calibration.seconds {oc * 1e3:8.1f} ms "
          f"(per-neuron max of {len(relus)} tensors)")
    results = []
    for per_channel, label in ((False, "per-tensor"), (True, "per-channel")):
        s = float(np.median(ort_setup[per_channel]))
        c = float(np.median(ort_collect[per_channel]))
        print(f"ort    MinMax {label:<11} setup {s * 1e3:8.1f} ms   collect+compute {c * 1e3:8.1f} ms"
              f"   -> collect+compute / our calibration {c / oc:.2f}x,"
              f" setup+collect+compute / our harden wall {(s + c) / ow:.2f}x")
        results.append(f"RESULT ort_calibration {name} {label} ratio_calib={c / oc:.3f} "
                       f"ratio_total={(s + c) / ow:.3f}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "fitact-onnx"))
    parser.add_argument("--models", default=os.environ.get("FITACT_BENCH_MODELS", "alexnet,vgg,resnet"))
    parser.add_argument("--reps", type=int, default=15, help="inference repetitions")
    parser.add_argument("--calib-reps", type=int, default=5, help="calibration repetitions")
    parser.add_argument("--extra-dir", help="also time every DIR/{model}.*.onnx (see emission_variants.py)")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--skip-calibration", action="store_true")
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} is not an executable; run cargo build --release first")
    calib = os.path.join(FIXTURES, "calib.npy")
    x = np.load(calib).astype(np.float32)
    print(f"# onnxruntime {ort.__version__}, onnx {onnx.__version__}, 1 intra-op thread")
    results = []
    with tempfile.TemporaryDirectory(prefix="fitact-bench-") as work:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model = os.path.join(FIXTURES, f"{name}.onnx")
            if not os.path.exists(model):
                print(f"# skipping {name}: {model} does not exist")
                continue
            if not args.skip_inference:
                results += inference(args, name, model, calib, x, work)
            if not args.skip_calibration:
                results += calibration(args, name, model, calib, x, work)
    print()
    print("\n".join(results))


if __name__ == "__main__":
    main()
