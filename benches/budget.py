#!/usr/bin/env python3
"""Budget benchmark: `harden --max-overhead` on ImageNet-size mobile and residual nets.

What it measures, per graph (the untrained ImageNet-class graphs of
fixtures/make_imagenet_graphs.py and fixtures/make_lcnet_graph.py, calibrated on their
calib.npy; or the trained Fashion-MNIST fixtures `resnet`, `mobilenetv3`, calibrated on
fixtures/calib.npy with its labels and evaluated on the first --eval-samples of
fixtures/test.npy: accuracy):
  * hardens it with the defaults (fitact: channel/zero, fold-threshold, every activation: the
    "full" model), with --granularity layer and --granularity hybrid, and with
    --max-overhead BUDGET (--fault-ber BER --fault-patterns PATTERNS on the first
    --budget-samples calibration images, --benefit sampled|targeted with --benefit-flips;
    --plot-budget writes the curve, --no-curve skips it);
  * times, independently of the tool, the original and each hardened model in onnxruntime
    (PyPI `onnxruntime`, CPU, intra/inter-op threads 1, batch 1, the first calibration image):
    every model loaded together, --reps interleaved repetitions (order rotated), each model
    run --min-time seconds per repetition; overhead = fastest run / the original's fastest - 1,
    wall time (in the JSON also in thread CPU time, and the median of per-repetition ratios of
    mean wall times);
  * runs `fitact-onnx evaluate` on all of them together at BER and --extra-bers (--trials paired
    trials, seed --eval-seed, not the seed the choice used) on --eval-samples held-out synthetic images
    (make_imagenet_graphs.synthetic_images with another seed): agreement with each model's
    fault-free top-1 (the weights are untrained: there are no labels to be accurate against);
    resilience kept = (budget - original) / (full - original), with a 95% bootstrap interval
    over the trials.
Output: a Markdown table on stdout and a JSON file (--json) with every number.

Trained graphs (fixtures/train_imagenet_graphs.py; --graphs pointing at them): the bench finds
their test.npy / test_labels.npy and measures accuracy against the labels instead of agreement.
At BER 1e-5 pass --activations all,logits,linear (without them full hardening itself holds 0-10%).

How long: on the 2-core machine, MobileNetV3-Large about 20-45 min (the harden run's campaigns
dominate; 300 held-out trials add about 7 min at 64 samples), PP-LCNet 7-15 min, ResNet-50 about
50 min at --budget-samples 8. Quick look: --patterns 8 --trials 30 --no-curve.

How to run (from the repository root; not part of CI):
  pip install onnx onnxruntime torch torchvision
  cargo build --release
  python3 fixtures/make_imagenet_graphs.py --archs mobilenet_v3_large,resnet50 --opsets 17
  python3 fixtures/make_lcnet_graph.py
  (or: python3 fixtures/train_imagenet_graphs.py --out target/trained-graphs)
  python3 benches/budget.py [--models mobilenet_v3_large.opset17,pplcnet_x1_0.opset17,resnet50.opset17]
      [--budget 10%] [--ber 4e-7] [--patterns 30] [--budget-samples 32] [--trials 300] [--activations KINDS]
      [--benefit targeted|sampled] [--benefit-flips 1] [--budget-costs EARLIER_WORK]
      [--eval-samples 32] [--reps 15] [--min-time 0.2] [--work target/budget] [--json target/budget/budget.json]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd):
    log("$ " + " ".join(cmd))
    started = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.time() - started, done.stderr


FIXTURES = {"resnet", "mobilenetv3", "vgg", "alexnet"}


def sources(args, name):
    """(model, calibration data, calibration labels or None, evaluation data, its labels or None)."""
    if name in FIXTURES:
        work = os.path.join(args.work, "fixtures")
        os.makedirs(work, exist_ok=True)
        data, labels = os.path.join(work, "test.npy"), os.path.join(work, "test_labels.npy")
        if not os.path.exists(data):
            np.save(data, np.load(os.path.join(ROOT, "fixtures", "test.npy"))[:args.eval_samples])
            np.save(labels, np.load(os.path.join(ROOT, "fixtures", "test_labels.npy"))[:args.eval_samples])
        return (os.path.join(ROOT, "fixtures", f"{name}.onnx"), os.path.join(ROOT, "fixtures", "calib.npy"),
                os.path.join(ROOT, "fixtures", "calib_labels.npy"), data, labels)
    labels = os.path.join(args.graphs, "test_labels.npy")
    if os.path.exists(labels):  # fixtures/train_imagenet_graphs.py: trained, with labelled data
        work = os.path.join(args.work, "trained")
        os.makedirs(work, exist_ok=True)
        data, held = os.path.join(work, "test.npy"), os.path.join(work, "test_labels.npy")
        np.save(data, np.load(os.path.join(args.graphs, "test.npy"))[:args.eval_samples])
        np.save(held, np.load(labels)[:args.eval_samples])
        return (os.path.join(args.graphs, f"{name}.onnx"), args.calib_path,
                os.path.join(args.graphs, "calib_labels.npy"), data, held)
    return (os.path.join(args.graphs, f"{name}.onnx"), args.calib_path, None, eval_images(args), None)


def harden(args, name, original, out, extra, calib):
    report = out[:-5] + ".json"
    seconds, stderr = run([args.bin, "harden", original, out, "--calib", calib,
                           "--report", report, "-v"] + extra)
    with open(os.path.join(args.work, name, os.path.basename(out)[:-5] + ".log"), "w") as f:
        f.write(stderr)
    with open(report) as f:
        return seconds, json.load(f)


def time_models(paths, x, reps, min_time):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(p, sess_options=so, providers=["CPUExecutionProvider"]) for p in paths]
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    outs = [s.run(None, f)[0] for s, f in zip(sessions, feeds)]
    for s, f in zip(sessions, feeds):
        s.run(None, f)
    t0 = time.perf_counter()
    for _ in range(3):
        sessions[0].run(None, feeds[0])
    iters = max(1, int(np.ceil(min_time / ((time.perf_counter() - t0) / 3))))
    fastest = [float("inf")] * len(paths)
    fastest_cpu = [float("inf")] * len(paths)
    means = [[] for _ in paths]
    for rep in range(reps):
        for k in range(len(paths)):
            i = (k + rep) % len(paths)
            total = 0.0
            for _ in range(iters):
                t, c = time.perf_counter(), time.thread_time()
                sessions[i].run(None, feeds[i])
                dt, dc = time.perf_counter() - t, time.thread_time() - c
                total += dt
                fastest[i] = min(fastest[i], dt)
                fastest_cpu[i] = min(fastest_cpu[i], dc)
            means[i].append(total / iters)
    paired = [float(np.median([m / o for m, o in zip(means[i], means[0])])) - 1 for i in range(len(paths))]
    diffs = [float(np.max(np.abs(o - outs[0]))) for o in outs]
    return {"fastest_ms": [1000 * f for f in fastest], "overhead_fastest": [f / fastest[0] - 1 for f in fastest],
            "overhead_fastest_thread_cpu": [f / fastest_cpu[0] - 1 for f in fastest_cpu],
            "overhead_paired_median": paired, "iters": iters, "reps": reps, "max_abs_diff": diffs}


def kept_share(trials, models, n_models, rng):
    """Per-trial metric of each model (accuracy where labelled, else agreement: 1 - SDC), and
    (budget - original) / (full - original) with a 95% bootstrap interval over trials."""
    by = {m: {} for m in range(n_models)}
    for t in trials:
        by[t["model"]][t["trial"]] = t["accuracy"] if t.get("accuracy") is not None else 1.0 - t["sdc"]
    keys = sorted(by[0])
    a = np.array([[by[m][k] for k in keys] for m in range(n_models)])
    o, f, b = a[models["original"]], a[models["full"]], a[models["budget"]]
    point = (b.mean() - o.mean()) / (f.mean() - o.mean()) if f.mean() > o.mean() else float("nan")
    boot = []
    for _ in range(2000):
        idx = rng.integers(0, len(keys), len(keys))
        span = f[idx].mean() - o[idx].mean()
        if span > 0:
            boot.append((b[idx].mean() - o[idx].mean()) / span)
    lo, hi = (np.percentile(boot, [2.5, 97.5]) if boot else (float("nan"), float("nan")))
    return a, point, float(lo), float(hi)


def eval_images(args):
    path = os.path.join(args.work, "eval.npy")
    if not os.path.exists(path):
        sys.path.insert(0, os.path.join(ROOT, "fixtures"))
        from make_imagenet_graphs import normalise, synthetic_images
        x = normalise(synthetic_images(args.eval_samples, np.random.default_rng(1000)))
        np.save(path, x)
    return path


def bench_model(args, name):
    original, calib, calib_labels, data, labels = sources(args, name)
    work = os.path.join(args.work, name)
    os.makedirs(work, exist_ok=True)
    out = {"model": name, "metric": "accuracy" if labels else "agreement"}
    forms = {}
    kinds = ["--activations", args.activations] if args.activations else []
    for form, extra in [("full", []), ("layer", ["--granularity", "layer"]), ("hybrid", ["--granularity", "hybrid"])]:
        path = os.path.join(work, f"{form}.onnx")
        out[f"{form}_harden_seconds"], _ = harden(args, name, original, path, extra + kinds, calib)
        forms[form] = path
    budget_path = os.path.join(work, "budget.onnx")
    extra = ["--max-overhead", args.budget, "--fault-ber", args.ber, "--fault-patterns", str(args.patterns),
             "--budget-samples", str(args.budget_samples), "--seed", str(args.seed)] + kinds
    if args.benefit:
        extra += ["--benefit", args.benefit]
    if args.benefit_flips:
        extra += ["--benefit-flips", str(args.benefit_flips)]
    if args.budget_costs:
        extra += ["--budget-costs", os.path.join(args.budget_costs, name, "budget.json")]
    if calib_labels:
        extra += ["--labels", calib_labels]
    if not args.no_curve:
        extra += ["--plot-budget", os.path.join(work, "curve.svg")]
    out["budget_harden_seconds"], report = harden(args, name, original, budget_path, extra, calib)
    out["budget_report"] = report["budget"]
    forms["budget"] = budget_path
    order = ["original", "full", "budget", "layer", "hybrid"]
    paths = [original] + [forms[k] for k in order[1:]]
    x = np.load(calib, mmap_mode="r")[:1].astype(np.float32)
    log(f"{name}: timing {len(paths)} models in onnxruntime")
    out["timing"] = {"models": order, **time_models(paths, np.ascontiguousarray(x), args.reps, args.min_time)}
    campaign = os.path.join(work, "campaign.json")
    bers = ",".join([args.ber] + [b for b in args.extra_bers.split(",") if b])
    seconds, _ = run([args.bin, "evaluate", *paths, "--data", data, "--ber", bers, "--trials", str(args.trials),
                      "--seed", str(args.eval_seed), "--report", campaign, "-q"] + (["--labels", labels] if labels else []))
    out["evaluate_seconds"] = seconds
    with open(campaign) as f:
        c = json.load(f)
    index = {k: i for i, k in enumerate(order)}
    main_trials = [t for t in c["trials"] if t["ber"] == 0]
    agreement, kept, lo, hi = kept_share(main_trials, index, len(order), np.random.default_rng(0))
    metric = (lambda r: r["accuracy"]) if labels else (lambda r: {"mean": 1 - r["sdc"]["mean"], "ci95": r["sdc"]["ci95"]})
    out["other_bers"] = [{"ber": r["ber"], "model": order[[os.path.abspath(p) for p in paths].index(os.path.abspath(r["model"]))],
                          "metric": metric(r)["mean"], "ci95": metric(r)["ci95"]}
                         for r in c["results"] if r["ber"] != float(args.ber)]
    out["resilience"] = {k: {"mean": float(agreement[i].mean()),
                            "ci95": float(1.96 * agreement[i].std(ddof=1) / np.sqrt(agreement.shape[1]))}
                        for k, i in index.items()}
    out["kept"] = {"point": kept, "ci95_low": lo, "ci95_high": hi}
    return out


def table(results, args):
    lines = [f"| model | form | bounded | overhead, fastest (paired median) | under faults at BER {args.ber} ({args.trials} trials) |",
             "|---|---|---|---|---|"]
    for r in results:
        t, a = r["timing"], r["resilience"]
        b = r["budget_report"]
        n = len(b["activations"])
        bounded = {"original": 0, "full": n, "layer": n, "hybrid": n,
                   "budget": sum(1 for x in b["activations"] if x["form"] != "none")}
        for i, form in enumerate(t["models"]):
            label = {"budget": f"--max-overhead {args.budget}", "full": "channel/zero (default)",
                     "layer": "layer/zero", "hybrid": "hybrid/zero"}.get(form, f"original ({t['fastest_ms'][0]:.2f} ms)")
            over = "" if i == 0 else f"{100 * t['overhead_fastest'][i]:+.1f}% ({100 * t['overhead_paired_median'][i]:+.1f}%)"
            lines.append(f"| {r['model'] + ' (' + r['metric'] + ')' if i == 0 else ''} | {label} | {bounded[form]} | {over} | "
                         f"{100 * a[form]['mean']:.1f}% +- {100 * a[form]['ci95']:.1f} |")
        k = r["kept"]
        lines.append(f"|  | resilience kept by the budget model | | | {100 * k['point']:.0f}% "
                     f"[{100 * k['ci95_low']:.0f}%, {100 * k['ci95_high']:.0f}%] |")
    for r in results:
        for o in r.get("other_bers", []):
            lines.append(f"- {r['model']} {o['model']} at BER {o['ber']:g}: {r['metric']} {100 * o['metric']:.1f}% +- {100 * o['ci95']:.1f}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "fitact-onnx"))
    p.add_argument("--graphs", default=os.path.join(ROOT, "target", "imagenet-graphs"))
    p.add_argument("--models", default="mobilenet_v3_large.opset17,pplcnet_x1_0.opset17,resnet50.opset17")
    p.add_argument("--budget", default="10%")
    p.add_argument("--ber", default="4e-7", help="the BER of the choice's campaigns and of the resilience kept")
    p.add_argument("--extra-bers", default="1e-5", help="also evaluated (comma-separated; reported in the JSON and below the table)")
    p.add_argument("--patterns", type=int, default=30)
    p.add_argument("--budget-samples", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--benefit", choices=["sampled", "targeted"], default=None,
                   help="harden's --benefit (default: harden's own default)")
    p.add_argument("--benefit-flips", type=int, default=None, help="harden's --benefit-flips (default: harden's)")
    p.add_argument("--budget-costs", default=None, metavar="WORK",
                   help="take the costs from WORK/<model>/budget.json, an earlier run's report (nothing timed in harden: "
                        "two benefit estimates compared on the same costs)")
    p.add_argument("--activations", default=None,
                   help="harden's --activations for every hardened form (default: harden's own default)")
    p.add_argument("--trials", type=int, default=300,
                   help="held-out paired trials (30 resolve the kept share to about +-25 points on MobileNetV3-Large)")
    p.add_argument("--eval-samples", type=int, default=32)
    p.add_argument("--eval-seed", type=int, default=1)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--min-time", type=float, default=0.2)
    p.add_argument("--no-curve", action="store_true")
    p.add_argument("--work", default=os.path.join(ROOT, "target", "budget"))
    p.add_argument("--json", default=None, help="default: WORK/budget.json")
    args = p.parse_args()
    args.calib_path = os.path.join(args.graphs, "calib.npy")
    os.makedirs(args.work, exist_ok=True)
    results = []
    started = time.time()
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        results.append(bench_model(args, name))
        with open(args.json or os.path.join(args.work, "budget.json"), "w") as f:
            json.dump({"args": vars(args), "results": results, "seconds": time.time() - started}, f, indent=1)
    print(table(results, args))
    print(f"\n{time.time() - started:.0f} s; JSON in {args.json or os.path.join(args.work, 'budget.json')}")


if __name__ == "__main__":
    main()
