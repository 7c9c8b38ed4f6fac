#!/usr/bin/env python3
"""Markdown table of docs/last_layer_share.sh: per fixture, the mean accuracy (%) of Clip-Act
and of calibrated per-channel FitAct under float32 weight faults at BER 3e-4 with the faults
everywhere, in the last layer only, and in the other weight tensors only, and FitAct's paired
difference against Clip-Act (points, ± the 95% t half-width over the trials).

    python3 docs/last_layer_share.py OUT_DIR
"""
import json
import math
import sys

T975_29 = 2.045  # Student's t, 95% two-sided, 29 degrees of freedom (30 trials)


def accuracies(report):
    by = {}
    for t in report["trials"]:
        by.setdefault(t["model"], {})[t["trial"]] = t["accuracy"]
    return by[0], by[1], report["models"][0]["clean_accuracy"]


def paired(a, b):
    d = [100 * (a[t] - b[t]) for t in sorted(a) if t in b]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    t = T975_29 if len(d) == 30 else 1.96
    return mean, t * sd / math.sqrt(len(d))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/last_layer"
    print("| fixture | clean | faults in | Clip-Act | FitAct | FitAct − Clip-Act | Clip-Act's loss from clean |")
    print("|---|---|---|---|---|---|---|")
    for m in ("alexnet", "vgg", "resnet"):
        for part, label in (("all", "every tensor"), ("last", "the last layer only"), ("rest", "the other layers only")):
            clip, fit, clean = accuracies(json.load(open(f"{out}/{m}-{part}.json")))
            mean = lambda a: 100 * sum(a.values()) / len(a)
            d, h = paired(fit, clip)
            print(f"| {m} | {100 * clean:.1f} | {label} | {mean(clip):.1f} | {mean(fit):.1f} | {d:+.2f} ±{h:.2f} | {100 * clean - mean(clip):.1f} |")


if __name__ == "__main__":
    main()
