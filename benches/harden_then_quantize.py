#!/usr/bin/env python3
"""The two orders of a pipeline that both hardens and quantizes, on fixtures/resnet.onnx.

    quantize -> harden : quantize_static, then fitact-onnx harden on the int8 model
    harden -> quantize : fitact-onnx harden on the float model (given flags), then quantize_static

For each: the ops of the model onnxruntime optimizes (integer kernels kept, float islands),
accuracy on test.npy[:N], and the run time over the plain int8 model (1 thread, batch 1,
interleaved rounds, medians).

usage: python3 benches/harden_then_quantize.py [--binary target/release/fitact-onnx] [--samples 500]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from make_precision_fixtures import quantize  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "fixtures")


def session(path, optimized=None):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.log_severity_level = 3
    if optimized:
        o.optimized_model_filepath = optimized
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def ops(path, tmp):
    out = os.path.join(tmp, "opt.onnx")
    session(path, out)
    counts = {}
    for n in onnx.load(out).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fitact-onnx"))
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    calib = np.load(os.path.join(FIX, "calib.npy"))
    x = np.load(os.path.join(FIX, "test.npy"))[: args.samples]
    y = np.load(os.path.join(FIX, "test_labels.npy"))[: args.samples]
    with tempfile.TemporaryDirectory() as tmp:
        def harden(src, dst, *flags):
            subprocess.run([args.binary, "harden", src, dst, "--calib", os.path.join(FIX, "calib.npy"), "-q", *flags],
                           check=True)

        int8 = os.path.join(tmp, "int8.onnx")
        quantize(os.path.join(FIX, "resnet.onnx"), int8, "qdq", calib, tmp)
        variants = {"int8 (no bounds)": int8}
        for name, flags in [("quantize -> harden (fitact)", ()), ("quantize -> harden (ranger)", ("--method", "ranger"))]:
            out = os.path.join(tmp, name.split("(")[1][:-1] + "_after.onnx")
            harden(int8, out, *flags)
            variants[name] = out
        for name, flags in [
            ("harden (fitact, default) -> quantize", ()),
            ("harden (ranger, fold) -> quantize", ("--method", "ranger", "--emission", "fold")),
        ]:
            hardened = os.path.join(tmp, f"h{len(variants)}.onnx")
            harden(os.path.join(FIX, "resnet.onnx"), hardened, *flags)
            out = os.path.join(tmp, f"hq{len(variants)}.onnx")
            quantize(hardened, out, "qdq", calib, tmp)
            variants[name] = out
        sessions = {k: session(v) for k, v in variants.items()}
        feed = x[:1]
        times = {k: [] for k in variants}
        for _ in range(args.rounds):
            for k, s in sessions.items():
                t = time.perf_counter()
                for _ in range(100):
                    s.run(None, {"input": feed})
                times[k].append((time.perf_counter() - t) / 100)
        base = np.median(times["int8 (no bounds)"])
        print("| pipeline | QLinearConv | bound ops left after optimization | accuracy | time vs int8 |")
        print("|---|---|---|---|---|")
        for k, path in variants.items():
            counts = ops(path, tmp)
            acc = float((sessions[k].run(None, {"input": x})[0].argmax(1) == y).mean())
            floats = {o: c for o, c in counts.items() if o in ("ThresholdedRelu", "Mul", "Div", "Where", "LessOrEqual", "Min", "Max", "Clip", "Relu")}
            print(f"| {k} | {counts.get('QLinearConv', 0)} | {floats or '-'} | {acc:.4f} | {np.median(times[k]) / base:.2f}x |")


if __name__ == "__main__":
    main()
