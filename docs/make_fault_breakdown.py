#!/usr/bin/env python3
"""Where float32 weight faults still cost accuracy once activations are bounded, and what the
bound search wins under faults, with more trials than docs/make_results.py runs.

A flip of bit 30 (the exponent's top bit) turns a small weight into ~1e38: the activation that
follows explodes, and a bound zeroes it. Every other bit changes a weight by a bounded factor
(an exponent bit below 30 by 2^(±2^k), a mantissa bit by less than 2, the sign bit flips it):
"in-range" corruption, which an activation bound can only cut where it also pushes clean
values over it. This runs the models of docs/make_results.py (which must have run first) at
one BER with only bit 30 flipping and with every other bit flipping, at that bit's share of
the flips. Then it compares the searched models with the calibrated bounds, Clip-Act and Ranger
trial by trial (the same flips in their shared weights) at float32 BER 1e-5 and q15.16 BER 3e-5,
with --paired-trials trials. Writes docs/results/breakdown-*.json and docs/results/breakdown.md
(docs/make_results.py includes the md).

    python3 docs/make_fault_breakdown.py [--ber 3e-5] [--samples 300] [--trials 30] [--paired-trials 60] [--seed 7]
"""
import argparse
import json
import os
import subprocess

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
ap = argparse.ArgumentParser()
ap.add_argument("--ber", type=float, default=3e-5)
ap.add_argument("--samples", type=int, default=300)
ap.add_argument("--trials", type=int, default=30)
ap.add_argument("--paired-trials", type=int, default=60)
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--fixtures", default="alexnet,vgg,resnet")
ap.add_argument("--no-run", action="store_true", help="only rewrite docs/results/breakdown.md")
args = ap.parse_args()

binary = "target/release/fitact-onnx"
out = "docs/results"
work = os.path.join(out, "models")
data = os.path.join(work, "breakdown-test.npy")
labels = os.path.join(work, "breakdown-test_labels.npy")
np.save(data, np.load("fixtures/test.npy")[: args.samples])
np.save(labels, np.load("fixtures/test_labels.npy")[: args.samples])
variants = ["unprotected", "ranger", "clipact", "fitact-channel", "fitact-search", "fitact-resilience"]
bit_sets = [("bit 30 only", "30"), ("every other bit", "0-29,31")]
paired_models = ["fitact-channel", "fitact-search", "fitact-resilience", "clipact", "ranger"]
paired_campaigns = [("float32", 1e-5), ("q15.16", 3e-5)]

fixtures = args.fixtures.split(",")
for fixture in [] if args.no_run else fixtures:
    models = [os.path.join("fixtures", f"{fixture}.onnx")] + [
        os.path.join(work, f"{fixture}-{v}.onnx") for v in variants[1:]
    ]
    for i, (_, bits) in enumerate(bit_sets):
        subprocess.run([binary, "evaluate", *models, "--data", data, "--labels", labels, "--ber", f"{args.ber:g}",
                        "--bits", bits, "--trials", str(args.trials), "--seed", str(args.seed), "-q",
                        "--report", os.path.join(out, f"breakdown-{fixture}-{i}.json")], check=True)
    paired = [os.path.join(work, f"{fixture}-{v}.onnx") for v in paired_models]
    for fmt, ber in paired_campaigns:
        subprocess.run([binary, "evaluate", *paired, "--data", data, "--labels", labels, "--ber", f"{ber:g}",
                        "--format", fmt, "--trials", str(args.paired_trials), "--seed", str(args.seed + 1), "-q",
                        "--report", os.path.join(out, f"breakdown-{fixture}-{fmt}-paired.json")], check=True)

rows = []
for fixture in fixtures:
    for i, (label, _) in enumerate(bit_sets):
        path = os.path.join(out, f"breakdown-{fixture}-{i}.json")
        if not os.path.exists(path):
            continue
        report = json.load(open(path))
        cells = []
        for m, model in enumerate(report["models"]):
            clean = model["clean_accuracy"]
            faulty = next(r for r in report["results"] if r["model"] == model["model"])["accuracy"]
            cells.append(f"{100 * (clean - faulty['mean']):.2f} ± {100 * faulty['ci95']:.2f}")
        rows.append(f"| {fixture} | {label} | " + " | ".join(cells) + " |")

pair_rows = []
pairs = [("fitact-search", "fitact-channel"), ("fitact-resilience", "fitact-channel"),
         ("fitact-resilience", "clipact"), ("fitact-resilience", "ranger")]
for fmt, ber in paired_campaigns:
    for fixture in fixtures:
        path = os.path.join(out, f"breakdown-{fixture}-{fmt}-paired.json")
        if not os.path.exists(path):
            continue
        report = json.load(open(path))
        by_trial = {}
        for r in report["trials"]:
            by_trial.setdefault(r["trial"], {})[paired_models[r["model"]]] = r["accuracy"]
        means = {m: 100 * np.mean([t[m] for t in by_trial.values()]) for m in paired_models}
        cells = []
        for a, c in pairs:
            d = np.array([t[a] - t[c] for t in by_trial.values()]) * 100
            half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
            mark = " **+**" if d.mean() - half > 0 else (" **−**" if d.mean() + half < 0 else "")
            cells.append(f"{d.mean():+.2f} ± {half:.2f}{mark}")
        pair_rows.append(f"| {fixture} | {fmt} | {ber:g} | " + " / ".join(f"{means[m]:.1f}" for m in paired_models)
                         + " | " + " | ".join(cells) + " |")

lines = [
    "## Where float32 faults still cost accuracy",
    "",
    f"Reproduce with `python3 docs/make_fault_breakdown.py --ber {args.ber:g} --samples {args.samples} "
    f"--trials {args.trials} --seed {args.seed}` (after `docs/make_results.py`).",
    "",
    f"Accuracy lost to float32 weight faults at BER {args.ber:g} (clean minus faulty accuracy, points, "
    f"mean ± 95% CI over {args.trials} trials on the first {args.samples} test images), with only bit 30 "
    "(the exponent's top bit: a weight becomes ~1e38) flipping, and with every other bit flipping, each "
    "bit with probability BER as in the full campaigns:",
    "",
    "| fixture | bits that flip | " + " | ".join(variants) + " |",
    "|---|---|" + "---|" * len(variants),
    *rows,
    "",
    "### The search under faults, trial by trial",
    "",
    f"{args.paired_trials} trials per row on the same {args.samples} test images (seed {args.seed + 1}, other "
    "flips than the campaigns above); mean accuracy (%) of calibrated per-channel FitAct / `tight` search / "
    "`resilience` search / Clip-Act / Ranger, then paired differences in points, mean ± 95% CI over the trials "
    "(**+**/**−**: the interval excludes 0):",
    "",
    "| fixture | weights | BER | calibrated / tight / resilience / Clip-Act / Ranger | tight − calibrated "
    "| resilience − calibrated | resilience − Clip-Act | resilience − Ranger |",
    "|---|---|---|---|---|---|---|---|",
    *pair_rows,
    "",
]
open(os.path.join(out, "breakdown.md"), "w").write("\n".join(lines))
print("wrote docs/results/breakdown.md")
