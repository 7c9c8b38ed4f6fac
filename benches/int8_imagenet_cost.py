#!/usr/bin/env python3
"""What bounding an ImageNet-size int8 model in its integers costs in onnxruntime (issue 32; not CI).

The fixtures of fixtures/precision/ are 28x28 nets, where an element-wise pass over an
activation weighs as much as a small convolution; this asks whether the int8 overhead falls on
the graphs edge devices run. For each graph of fixtures/make_imagenet_graphs.py (untrained
weights: cost only) it quantizes the float32 graph with onnxruntime's quantize_static as the
precision fixtures are (QDQ, per channel, uint8 activations, int8 weights, MinMax on the graphs'
calib.npy), hardens the int8 model with the release binary (`harden`, the default: channel zero
bounds in the integers, opset raised to 14 for the uint8 mask), and times both in onnxruntime
(1 thread, batch 1, ORT_ENABLE_ALL, interleaved rounds, medians: time_variants of
benches/precision_emissions.py).

usage: python3 benches/int8_imagenet_cost.py [--graphs target/imagenet-graphs]
       [--models resnet50.opset17,mobilenet_v3_large.opset17] [--rounds 9] [--runs 40]
       [--binary target/release/fitact-onnx] [--work target/int8-imagenet] [--json OUT]
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnxruntime.quantization import QuantFormat

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "fixtures"))
sys.path.insert(0, HERE)
from make_precision_fixtures import quantize  # noqa: E402
from precision_emissions import ALL, time_variants  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--graphs", default=os.path.join(ROOT, "target", "imagenet-graphs"))
    p.add_argument("--models", default="resnet50.opset17,mobilenet_v3_large.opset17")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fitact-onnx"))
    p.add_argument("--work", default=os.path.join(ROOT, "target", "int8-imagenet"))
    p.add_argument("--json")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    calib_path = os.path.join(args.graphs, "calib.npy")
    calib = np.load(calib_path)
    out = {}
    for name in args.models.split(","):
        src = os.path.join(args.graphs, name + ".onnx")
        q = os.path.join(args.work, name + ".qdq.onnx")
        hardened = os.path.join(args.work, name + ".qdq.fitact.onnx")
        report = os.path.join(args.work, name + ".qdq.fitact.json")
        if not os.path.exists(q):
            quantize(src, q, QuantFormat.QDQ, calib, args.work)
        subprocess.run([args.binary, "harden", q, hardened, "--calib", calib_path, "--report", report, "-q"], check=True)
        bounded = len(json.load(open(report))["activations"])
        variants = [("original", onnx.load(q), ALL), ("fitact", onnx.load(hardened), ALL)]
        per_round = time_variants(variants, calib, args.rounds, args.runs)
        base = np.array(per_round["original"])
        ratios = np.array(per_round["fitact"]) / base
        out[name] = {
            "bounded": bounded,
            "original_ms": 1e3 * float(np.median(base)),
            "fitact_ms": 1e3 * float(np.median(per_round["fitact"])),
            "ratio_of_medians": float(np.median(per_round["fitact"]) / np.median(base)),
            "round_ratios": [float(r) for r in ratios],
        }
        r = out[name]
        print(f"{name}: {bounded} activations bounded in int8; original {r['original_ms']:.2f} ms, "
              f"fitact {r['fitact_ms']:.2f} ms: {r['ratio_of_medians']:.3f}x "
              f"(rounds {ratios.min():.3f}-{ratios.max():.3f})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": out}, f, indent=1)


if __name__ == "__main__":
    main()
