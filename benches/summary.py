#!/usr/bin/env python3
"""Tabulates the `RESULT ...` lines of the benches (read from stdin or the files given).

Used by benches/run.sh; the lines come from benches/calibration.rs, benches/inference.rs and
benches/ort.py.
"""

import fileinput
from collections import defaultdict

STANDARD = ["fitact/channel", "fitact/neuron", "clipact/layer", "ranger/layer"]


def main():
    calib, inf, ortcal = {}, defaultdict(dict), {}
    variants = list(STANDARD)
    for line in fileinput.input():
        f = line.split()
        if len(f) < 3 or f[0] != "RESULT":
            continue
        kv = dict(x.split("=", 1) for x in f if "=" in x)
        kind = f[1]
        if kind == "calibration":
            calib[(f[2], kv["engine"])] = kv
        elif kind in ("inference", "ort_inference"):
            runtime = "tract" if kind == "inference" else "onnxruntime"
            inf[(f[2], runtime, f[3])][f[4]] = float(kv["ratio"])
            if f[4] not in variants:
                variants.append(f[4])
        elif kind == "ort_calibration":
            ortcal[(f[2], f[3])] = kv

    if calib:
        print("calibrate time / one plain pass, same engine, load included (batch 8; target <= 1.3x in onnxruntime)")
        print(f"  {'model':<12} {'engine':<12} {'ratio':>6}")
        for (m, engine), kv in calib.items():
            print(f"  {m:<12} {engine:<12} {float(kv['ratio']):>5.2f}x")

    if inf:
        widths = [max(8, len(v) + 2) for v in variants]
        print()
        print("inference time, hardened / original")
        print(f"  {'model':<8} {'runtime':<12} {'batch':<8}" + "".join(f"{v:>{w}}" for v, w in zip(variants, widths)))
        order = sorted(inf, key=lambda k: (k[0], k[1] != "tract", k[2] != "batch64"))
        for m, rt, b in order:
            r = inf[(m, rt, b)]
            cells = "".join(
                f"{r[v]:>{w - 1}.2f}x" if v in r else f"{'-':>{w}}" for v, w in zip(variants, widths)
            )
            print(f"  {m:<8} {rt:<12} {b:<8}{cells}")

    if ortcal:
        print()
        print("onnxruntime MinMax calibrator time / ours (above 1: ours is faster)")
        print(f"  {'model':<8} {'ranges':<12} {'collect+compute / calibration':>30} {'setup+all / harden wall':>24}")
        for (m, g), kv in ortcal.items():
            print(f"  {m:<8} {g:<12} {float(kv['ratio_calib']):>29.2f}x {float(kv['ratio_total']):>23.2f}x")


if __name__ == "__main__":
    main()
