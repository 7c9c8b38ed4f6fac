#!/usr/bin/env python3
"""Reproduces the experiment of docs/results.md with the release binary and rewrites it.

For every fixture (AlexNet-, VGG-, ResNet-style Fashion-MNIST CNNs): harden with Ranger,
Clip-Act and FitAct (channel and neuron granularity) on fixtures/calib.npy, then one
`evaluate` campaign per weight format (float32, q15.16) comparing the unprotected model and
the four variants on the same faults, over BER 1e-7 to 3e-5.

    python3 docs/make_results.py [--samples 300] [--trials 12] [--seed 7]

Writes docs/results/<fixture>-<format>.{json,csv,svg}, then docs/results.md from every such
report present (so `--fixtures resnet` adds one fixture to earlier runs).
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)  # paths in the reports are relative to the repository
ap = argparse.ArgumentParser()
ap.add_argument("--samples", type=int, default=300)
ap.add_argument("--trials", type=int, default=12)
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--fixtures", default="alexnet,vgg,resnet")
ap.add_argument("--formats", default="float32,q15.16")
ap.add_argument("--no-run", action="store_true", help="only rewrite docs/results.md from the reports present")
args = ap.parse_args()

binary = "target/release/fitact-onnx"
out = "docs/results"
work = os.path.join(out, "models")
os.makedirs(work, exist_ok=True)
bers = "1e-7,1e-6,3e-6,1e-5,3e-5"
data = os.path.join(work, "test.npy")
labels = os.path.join(work, "test_labels.npy")
np.save(data, np.load("fixtures/test.npy")[: args.samples])
np.save(labels, np.load("fixtures/test_labels.npy")[: args.samples])

variants = [
    ("ranger", ["--method", "ranger"]),
    ("clipact", ["--method", "clipact"]),
    ("fitact-channel", ["--method", "fitact"]),
    ("fitact-neuron", ["--method", "fitact", "--granularity", "neuron"]),
    ("fitact-search", ["--method", "fitact", "--search", "--labels", "fixtures/calib_labels.npy"]),
    ("fitact-resilience", ["--method", "fitact", "--search", "--labels", "fixtures/calib_labels.npy",
                           "--objective", "resilience"]),
]
searched = ["fitact-channel", "fitact-search", "fitact-resilience"]
for fixture in [] if args.no_run else args.fixtures.split(","):
    original = os.path.join("fixtures", f"{fixture}.onnx")
    models = [original]
    for name, flags in variants:
        path = os.path.join(work, f"{fixture}-{name}.onnx")
        subprocess.run([binary, "harden", original, path, "--calib", "fixtures/calib.npy", "-q",
                        "--report", path.replace(".onnx", ".json")] + flags, check=True)
        models.append(path)
        if name in searched:
            # The budget on new data: clean accuracy on the whole test split (2000 images).
            subprocess.run([binary, "check", path, "--reference", original, "--data", "fixtures/test.npy",
                            "--labels", "fixtures/test_labels.npy", "--max-accuracy-drop", "0.5%", "-q",
                            "--report", path.replace(".onnx", ".check.json")], check=False)
    for fmt in args.formats.split(","):
        stem = os.path.join(out, f"{fixture}-{fmt}")
        subprocess.run([binary, "evaluate", *models, "--data", data, "--labels", labels, "--ber", bers,
                        "--trials", str(args.trials), "--seed", str(args.seed), "--format", fmt,
                        "--report", stem + ".json", "--csv", stem + ".csv", "--plot", stem + ".svg", "-q"], check=True)

searches = []
for fixture in ["alexnet", "vgg", "resnet"]:
    for name in ["fitact-search", "fitact-resilience"]:
        report_path = os.path.join(work, f"{fixture}-{name}.json")
        if not os.path.exists(report_path):
            continue
        log = json.load(open(report_path))["search"]
        test = lambda n: json.load(open(os.path.join(work, f"{fixture}-{n}.check.json")))
        calibrated, searched_check = test("fitact-channel"), test(name)
        faults = ""
        if log.get("calibrated_fault_metric") is not None:
            faults = f"{100 * log['calibrated_fault_metric']:.1f} → {100 * log['final_fault_metric']:.1f}"
        searches.append(f"| {fixture} | {log['objective']} | {100 * log['mean_bound_ratio']:.1f}% | "
                        f"{100 * searched_check['reference_value']:.2f} | {100 * calibrated['value']:.2f} | "
                        f"{100 * searched_check['value']:.2f} | {100 * searched_check['drop']:.2f} | {faults} | "
                        f"{log['evaluations']} | {log['seconds']:.1f} s |")

sections = []
for fixture in ["alexnet", "vgg", "resnet"]:
    for fmt in ["float32", "q15.16", "int8"]:
        stem = os.path.join(out, f"{fixture}-{fmt}")
        if not os.path.exists(stem + ".json"):
            continue
        report = json.load(open(stem + ".json"))
        bers = ",".join(f"{b:g}" for b in report["config"]["bers"])
        trials = report["config"]["trials"]
        names = ["unprotected"] + [v[0] for v in variants]
        label = dict(zip([m["model"] for m in report["models"]], names))
        rows = ["| model | clean | " + " | ".join(f"BER {b}" for b in bers.split(",")) + " | AUC |",
                "|---|---|" + "---|" * len(bers.split(",")) + "---|"]
        for m in report["models"]:
            cells = []
            for r in report["results"]:
                if r["model"] == m["model"]:
                    a = r["accuracy"]
                    cells.append(f"{100 * a['mean']:.1f} ± {100 * a['ci95']:.1f}")
            rows.append(f"| {label[m['model']]} | {100 * m['clean_accuracy']:.1f} | " + " | ".join(cells)
                        + f" | {100 * m['accuracy_auc']:.1f} |")
        sdc = ["| model | " + " | ".join(f"SDC @ {b}" for b in bers.split(",")) + " |",
               "|---|" + "---|" * len(bers.split(","))]
        for m in report["models"]:
            cells = [f"{100 * r['sdc']['mean']:.1f}" for r in report["results"] if r["model"] == m["model"]]
            sdc.append(f"| {label[m['model']]} | " + " | ".join(cells) + " |")
        sections.append(f"### {fixture}, {fmt} weights\n\nTop-1 accuracy (%) under faults, mean ± 95% CI over "
                        f"{trials} trials ({report['config']['samples']} test images):\n\n" + "\n".join(rows)
                        + "\n\nSDC rate (%, prediction differs from the model's own fault-free one):\n\n"
                        + "\n".join(sdc) + f"\n\n![{fixture} {fmt}](results/{fixture}-{fmt}.svg)\n")

# Paired differences: in each trial every model gets the same flips in its shared weights, so
# the per-trial difference of two models' accuracies cancels most of the trial-to-trial noise.
pairs = [("fitact-search", "fitact-channel"), ("fitact-resilience", "fitact-channel"),
         ("fitact-resilience", "clipact"), ("fitact-resilience", "ranger")]
paired_rows = []
for fmt in ["float32", "q15.16"]:
    for fixture in ["alexnet", "vgg", "resnet"]:
        stem = os.path.join(out, f"{fixture}-{fmt}")
        if not os.path.exists(stem + ".json"):
            continue
        report = json.load(open(stem + ".json"))
        names = ["unprotected"] + [v[0] for v in variants]
        config_bers = report["config"]["bers"]
        for b, ber in enumerate(config_bers):
            if ber not in (1e-5, 3e-5):
                continue
            by_trial = {}
            for r in report["trials"]:
                if r["ber"] == b:
                    by_trial.setdefault(r["trial"], {})[names[r["model"]]] = r["accuracy"]
            cells = []
            for a, c in pairs:
                d = np.array([t[a] - t[c] for t in by_trial.values()]) * 100
                half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
                mark = " **+**" if d.mean() - half > 0 else (" **−**" if d.mean() + half < 0 else "")
                cells.append(f"{d.mean():+.2f} ± {half:.2f}{mark}")
            paired_rows.append(f"| {fixture} | {fmt} | {ber:g} | " + " | ".join(cells) + " |")
paired = ""
if paired_rows:
    paired = ("## Search against the other bounds, trial by trial\n\nAccuracy difference in points, mean ± 95% CI "
              "over the trials of each BER, where both models of a pair had the same flips in their shared weights "
              "(**+**/**−**: the interval excludes 0):\n\n"
              "| fixture | weights | BER | tight − calibrated | resilience − calibrated | resilience − Clip-Act "
              "| resilience − Ranger |\n|---|---|---|---|---|---|---|\n" + "\n".join(paired_rows) + "\n\n")

header = f"""# Results: what hardening buys under weight bit flips

Reproduce with `cargo build --release && python3 docs/make_results.py --samples {args.samples} --trials {args.trials} --seed {args.seed}`
(this file, and `docs/results/`, are its output).

Setup: the fixtures of `fixtures/` (Fashion-MNIST CNNs, trained by `fixtures/make_fixtures.py`),
hardened on the 512 calibration images of `fixtures/calib.npy` (bounds = calibrated maxima × 1.001,
no search), evaluated on the first {args.samples} images of the test set. Each bit of each stored
weight (bound tensors included) flips with probability BER; the seven models of a fixture get the
same flips in their shared weights in each trial. `q15.16` stores weights as 32-bit fixed point
(16 fraction bits). AUC is the mean accuracy over the BER range on a log axis.

- unprotected: the model as trained
- ranger: per-layer bounds, saturate (Ranger, DSN 2021)
- clipact: per-layer bounds, zero above (FT-ClipAct, DATE 2020)
- fitact-channel / fitact-neuron: per-channel / per-neuron bounds, zero above (FitAct, DATE 2022),
  here calibrated post-training, without the paper's gradient training of the bounds
- fitact-search: per-channel bounds tightened by `harden --search` (objective `tight`,
  gradient-free, budget 0.5 points of accuracy, labels given; scales searched on bounds fitted
  on three quarters of the calibration images, every candidate checked on all 512, then applied
  to the extremes over all 512)
- fitact-resilience: the same search with `--objective resilience` (of the points the search
  passes through, the one with the best held-out accuracy under fixed float32 fault patterns at
  BER 1e-5 and 3e-5, if it beats the calibrated bounds there with 95% confidence)

## What this run shows (seed 7, 300 test images, 12 trials per BER)

- **float32, BER 1e-5**: unprotected 43.5 / 41.1 / 35.6 % (AlexNet / VGG / ResNet); every
  zero-above-bound variant stays within about a point of its clean accuracy (Clip-Act 92.9 / 95.5
  / 94.4, FitAct per channel 92.9 / 95.4 / 94.3); Ranger's saturation lets the faults through
  more often (90.8 / 85.9 / 70.6). At 3e-5 the unprotected models are near chance (3.8 / 11.4 /
  4.2) and Clip-Act and FitAct still hold 92.7-94.7.
- **q15.16**: faults hurt more (a flipped high bit adds thousands, in either sign). Per-channel
  FitAct has the best or equal accuracy AUC on all three (91.0 / 93.2 / 91.4 against Clip-Act's
  90.4 / 91.2 / 89.3), and per-neuron FitAct is the most accurate at 3e-5 (75.9 / 89.0 / 75.4
  against Clip-Act's 72.4 / 69.0 / 59.6).
- **Per-neuron bounds cost clean accuracy** (0.7 / 0.6 / 1.0 point): maxima per neuron over 512
  images do not cover every test image.
- **The search keeps its budget on new data.** Checked on 128 held-out images with the
  plain accuracy criterion, a first version lost 1.15 / 3.90 / 1.50 points on the whole test
  split (budget 0.5). Now a sample counts only if it also keeps half its top-1 margin, the
  check may use half the budget, candidates are checked on all 512 calibration images (the
  fitted ones included: the largest of them set the bounds), and the scales apply to the
  extremes over all 512. The test-split drop is 0.10 / 0.50 / 0.05 points (`tight`) and 0.05 /
  -0.10 / 0.35 (`resilience`), with the bounds at 80-94% of the calibrated extremes (table
  below). Per-neuron 99th percentiles in place of outlying maxima (`--percentile 0.99`) broke
  that budget (ResNet lost 0.70 even though each percentile had to lose nothing on the check:
  `harden fixtures/resnet.onnx ... --search --labels fixtures/calib_labels.npy --percentile
  0.99`), so they are off by default.
- **Where faults get through the bounds, the search wins**: with q15.16 weights at 3e-5
  (a flipped high bit adds thousands, in range for no bound), over 60 paired trials, the
  `resilience` search beats the calibrated bounds on VGG (+3.35 ± 1.64 points) and ResNet
  (+1.64 ± 1.17), ties on AlexNet (+0.10 ± 0.26), and beats Clip-Act (+4.1 / +23.4 / +13.8) and
  Ranger (+63 to +75) on all three; `tight` does about as well (+0.14 / +2.19 / +2.07 over
  calibrated).
- **Under float32 faults there is nothing left to win**: the whole loss of the unprotected
  models comes from bit 30 (a weight becomes ~1e38); with only the other 31 bits flipping at
  3e-5 they lose 0.04 / -0.14 / -0.11 points, and every zero-above-bound variant removes the
  bit-30 loss (what is left is within 0.9 points of zero; section "Where float32 faults still
  cost accuracy"). So the searched
  bounds cannot score higher than the calibrated ones there; they score the same or lower by
  their clean cost (at 1e-5 over 60 paired trials: `resilience` -0.09 / -0.13 / -0.04 points,
  `tight` -0.47 / -1.04 / -0.24), and far above Ranger (+1.3 / +8.8 / +10.7).

"""
search_table = ""
if searches:
    search_table = ("## The bound search\n\nPer fixture and objective: searched bounds as a share of the calibrated "
                    "extremes (mean of the per-activation scales); clean top-1 accuracy (%) on the whole test split "
                    "(2000 images, never seen by the search) of the original, of the calibrated per-channel bounds "
                    "and of the searched ones, and the searched model's drop in points (budget 0.5); for "
                    "`resilience`, the accuracy under the search's own fault patterns (float32, BER 1e-5 and 3e-5, "
                    "4 patterns each, on 128 of the calibration images) with the calibrated and with the searched bounds; and the search's "
                    "cost (release build, 2 cores shared with another experiment; run side by side with the previous version, which found the same bounds byte for byte before its checks stopped early and reran only the changed part on cached values, this one took 1.7x / 1.2x less time on AlexNet and 1.8x / 1.7x less on VGG, tight / resilience):\n\n| fixture | objective | bounds / extremes | test original "
                    "| test calibrated | test searched | drop | held-out under faults | evaluations | time |\n"
                    "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(searches) + "\n\n")
activations = ""
if os.path.exists("docs/results/activations.md"):
    activations = open("docs/results/activations.md").read() + "\n"
breakdown = ""
if os.path.exists("docs/results/breakdown.md"):
    breakdown = open("docs/results/breakdown.md").read() + "\n"
open("docs/results.md", "w").write(header + search_table + paired + breakdown + activations + "\n".join(sections))
print("wrote docs/results.md")
