"""Does `harden --search` hold its budget on new data, and does its default objective never do
worse under faults than the calibrated bounds? (issue 28; results in
docs/results/search_default_2026-12-05.md)

For each fixture, calibration size (draws of N of the 512 calibration samples, one draw per
seed) it hardens with the calibrated bounds, with the default search (objective resilience,
float32 faults, budget 0.5%), and with searches at a budget N samples can vouch for
(--budget, default 5%): tight, resilience under float32 faults, resilience under q15.16 faults.
Every model's top-1 accuracy on the 2,000 test images (onnxruntime) gives the drop against the
original; `evaluate` runs paired campaigns (the same flips in every model) of the searched
against the calibrated bounds under the fault model each search used.

usage: python3 benches/search_default.py [--binary target/release/fitact-onnx]
         [--models resnet,alexnet,vgg] [--sizes 64,128,200] [--seeds 10] [--budget 0.05]
         [--fault-seeds 3] [--trials 40] --out results.json
Prints one JSON line per run and writes every record to --out;
`python3 benches/search_default.py --summarize results.json` prints the tables.
"""
import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def accuracy(path, x, y):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    return (logits.argmax(axis=1) == y)


def harden(binary, model, calib, labels, out, flags):
    report = out.with_suffix(".json")
    args = [binary, "harden", str(model), str(out), "--calib", str(calib), "--report", str(report), "-q"]
    if flags:
        args += ["--labels", str(labels)] + flags
    started = time.time()
    subprocess.run(args, check=True)
    seconds = time.time() - started
    return json.loads(report.read_text()).get("search"), seconds


def paired_gain(binary, calibrated, searched, fmt, ber, trials, seed, work):
    """Mean paired accuracy gain (searched - calibrated) under faults, and its 95% half-width."""
    report = work / f"campaign-{fmt}.json"
    subprocess.run(
        [binary, "evaluate", str(calibrated), str(searched), "--data", str(FIXTURES / "test.npy"),
         "--labels", str(FIXTURES / "test_labels.npy"), "--ber", str(ber), "--trials", str(trials),
         "--seed", str(seed), "--format", fmt, "--report", str(report), "-q"],
        check=True,
    )
    by_model = {0: {}, 1: {}}
    for t in json.loads(report.read_text())["trials"]:
        by_model[t["model"]][t["trial"]] = t["accuracy"]
    gains = np.array([by_model[1][k] - by_model[0][k] for k in sorted(by_model[0])])
    return float(gains.mean()), float(1.96 * gains.std(ddof=1) / math.sqrt(len(gains)))


def one_draw(args, name, size, seed, x_test, y_test, work):
    model = FIXTURES / f"{name}.onnx"
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(512, size=size, replace=False))
    calib, labels = work / "calib.npy", work / "labels.npy"
    np.save(calib, np.load(FIXTURES / "calib.npy")[rows])
    np.save(labels, np.load(FIXTURES / "calib_labels.npy")[rows])
    budget = f"{100 * args.budget:g}%"
    runs = {
        "calibrated": [],
        "default": ["--search", "--seed", str(seed)],
        "tight": ["--search", "--objective", "tight", "--budget", budget],
        "resilience-float32": ["--search", "--budget", budget, "--seed", str(seed)],
        "resilience-q15.16": ["--search", "--budget", budget, "--seed", str(seed), "--fault-format", "q15.16"],
    }
    original = accuracy(model, x_test, y_test)
    record = {"model": name, "size": size, "seed": seed, "budget": args.budget,
              "original_accuracy": float(original.mean())}
    for run, flags in runs.items():
        if run.startswith("resilience") and seed >= args.fault_seeds:
            continue  # the fault comparisons run on the first --fault-seeds draws only (time)
        out = work / f"{run}.onnx"
        search, seconds = harden(args.binary, model, calib, labels, out, flags)
        right = accuracy(out, x_test, y_test)
        entry = {"seconds": round(seconds, 2), "accuracy": float(right.mean()),
                 "lost": int((original & ~right).sum()), "gained": int((~original & right).sum())}
        if search:
            entry.update({k: search[k] for k in ["verdict", "mean_bound_ratio", "drop_upper_bound", "may_lose",
                                                  "smallest_budget", "holdout_samples", "seconds"]})
            entry["check_lost"] = search["lost"]
            entry["search_seconds"] = entry.pop("seconds")
            entry["seconds"] = round(seconds, 2)
        record[run] = entry
    if seed < args.fault_seeds:
        for run, fmt, ber in [("resilience-float32", "float32", 3e-5), ("default", "float32", 3e-5),
                              ("resilience-q15.16", "q15.16", 3e-5)]:
            if record[run]["mean_bound_ratio"] < 1.0:
                gain, half = paired_gain(args.binary, work / "calibrated.onnx", work / f"{run}.onnx", fmt, ber,
                                         args.trials, seed, work)
            else:
                gain, half = 0.0, 0.0  # the calibrated bounds, written as they are: no campaign needed
            record[run]["fault_gain"] = {"format": fmt, "ber": ber, "trials": args.trials, "mean": gain,
                                         "ci95": half}
    return record


def summarize(records):
    """The markdown tables of docs/results/search_default_2026-12-05.md, from the records."""
    lines = ["| model | calibration samples | draws | tight: mean bound ratio | tight: test drop, mean / max (points) "
             "| within budget | check: lost / vouched drop (max) | default: bounds kept | tight / default search time, mean (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    cells = {}
    for r in records:
        cells.setdefault((r["model"], r["size"]), []).append(r)
    for (model, size), rs in cells.items():
        drops = [100 * (r["original_accuracy"] - r["tight"]["accuracy"]) for r in rs]
        budget = 100 * rs[0]["budget"]
        lines.append(
            f"| {model} | {size} | {len(rs)} | {np.mean([r['tight']['mean_bound_ratio'] for r in rs]):.3f} "
            f"| {np.mean(drops):.2f} / {max(drops):.2f} | {sum(d <= budget for d in drops)} of {len(rs)} "
            f"| {max(r['tight']['check_lost'] for r in rs)} / {100 * max(r['tight']['drop_upper_bound'] for r in rs):.2f}% "
            f"| {sum(r['default']['mean_bound_ratio'] == 1.0 for r in rs)} of {len(rs)} "
            f"| {np.mean([r['tight']['search_seconds'] for r in rs]):.1f} / "
            f"{np.mean([r['default']['search_seconds'] for r in rs]):.1f} |")
    lines += ["", "| model | calibration samples | draw | search | fault model | bound ratio | test drop (points) "
              "| paired gain under faults (points, 95%) | search time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for run in ["default", "resilience-float32", "resilience-q15.16"]:
            e = r.get(run)
            if not e or "fault_gain" not in e:
                continue
            g = e["fault_gain"]
            lines.append(
                f"| {r['model']} | {r['size']} | {r['seed']} | {run} | {g['format']} {g['ber']:g} | "
                f"{e['mean_bound_ratio']:.3f} | {100 * (r['original_accuracy'] - e['accuracy']):.2f} | "
                f"{100 * g['mean']:+.2f} ± {100 * g['ci95']:.2f} | {e['search_seconds']:.1f} |")
    return "\n".join(lines)


def main():
    if sys.argv[1:2] == ["--summarize"]:
        print(summarize(json.loads(Path(sys.argv[2]).read_text())))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/fitact-onnx")
    parser.add_argument("--models", default="resnet,alexnet,vgg")
    parser.add_argument("--sizes", default="64,128,200")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--fault-seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    x_test, y_test = np.load(FIXTURES / "test.npy"), np.load(FIXTURES / "test_labels.npy")
    records = []
    for name in args.models.split(","):
        for size in map(int, args.sizes.split(",")):
            for seed in range(args.seeds):
                with tempfile.TemporaryDirectory() as work:
                    record = one_draw(args, name, size, seed, x_test, y_test, Path(work))
                print(json.dumps(record), flush=True)
                records.append(record)
                Path(args.out).write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
