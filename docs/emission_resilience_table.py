#!/usr/bin/env python3
"""The markdown table of docs/emission_resilience.sh's campaigns: accuracy under weight faults
of each form, and its paired difference with Clip-Act (same flips in shared tensors; mean and
95% interval over the trials).

    python3 docs/emission_resilience_table.py OUT_DIR
"""
import glob
import json
import math
import sys

FORMS = [
    ("", "unprotected"),
    (".clipact", "clipact (layer, zero)"),
    (".clipact-foldthr", "clipact (layer, zero), fold-threshold"),
    (".ranger", "ranger (layer, saturate)"),
    (".fitact-plain", "fitact channel/zero, plain"),
    (".fitact-foldthr", "fitact channel/zero, fold-threshold"),
    (".sat-plain", "channel/saturate, plain"),
    (".sat-fold", "channel/saturate, fold"),
]


def form_of(path):
    stem = path.split("/")[-1].removesuffix(".onnx")
    for suffix, name in reversed(FORMS):
        if suffix and stem.endswith(suffix):
            return name
    return "unprotected"


def cells(report):
    """{(form, ber): text} and the clean accuracies by form."""
    names = [form_of(m["model"]) for m in report["models"]]
    clip = names.index("clipact (layer, zero)")
    out = {}
    for b, ber in enumerate(report["config"]["bers"]):
        base = {t["trial"]: t["accuracy"] for t in report["trials"] if t["ber"] == b and t["model"] == clip}
        for m, name in enumerate(names):
            these = [t for t in report["trials"] if t["ber"] == b and t["model"] == m]
            acc = sum(t["accuracy"] for t in these) / len(these)
            d = [t["accuracy"] - base[t["trial"]] for t in these]
            dm = sum(d) / len(d)
            sd = math.sqrt(sum((x - dm) ** 2 for x in d) / (len(d) - 1)) if len(d) > 1 else 0.0
            ci = 1.96 * sd / math.sqrt(len(d))
            out[(name, ber)] = f"{100 * acc:.1f} ({100 * dm:+.1f} ±{100 * ci:.1f})" if m != clip else f"{100 * acc:.1f}"
    clean = {n: m["clean_accuracy"] for n, m in zip(names, report["models"])}
    return out, clean


out_dir = sys.argv[1]
for fixture in ["alexnet", "vgg", "resnet", "mobilenetv3"]:
    f32 = json.load(open(f"{out_dir}/{fixture}-float32.json"))
    q15 = json.load(open(f"{out_dir}/{fixture}-q15.json"))
    a, clean = cells(f32)
    b, _ = cells(q15)
    print(f"\n### {fixture} ({f32['config']['samples']} test images, {f32['config']['trials']} paired trials per BER, seed {f32['config']['seed']})\n")
    print("| form | clean | float32 1e-5 | float32 3e-5 | q15.16 3e-5 |")
    print("|---|---|---|---|---|")
    for _, name in FORMS:
        print(f"| {name} | {100 * clean[name]:.1f} | {a[(name, 1e-5)]} | {a[(name, 3e-5)]} | {b[(name, 3e-5)]} |")
