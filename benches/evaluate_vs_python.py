#!/usr/bin/env python3
"""Fault-injection throughput: `fitact-onnx evaluate` against the obvious Python way.

The baseline, per trial: flip bits of the float32 initializers with numpy (each bit with
probability BER), serialize the model, open a new onnxruntime session, run the data set.
Ours: the release binary's `evaluate` on the same model, data and trial count (its trials
rerun only what the flipped weights reach), in each engine of --engines (onnxruntime, the
default engine when its library is found, and tract). Both measured in this run, on the same thread
budget (1 thread each, then all cores: ours runs trials in parallel, onnxruntime uses its
intra-op threads). Prints trials per second and the ratio ours / baseline per BER.

    python3 benches/evaluate_vs_python.py [MODEL] [DATA.npy] [--samples 500] [--trials 50]
        [--engines onnxruntime,tract]
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
from onnx import numpy_helper as nh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("model", nargs="?", default=os.path.join(ROOT, "fixtures/resnet.onnx"))
ap.add_argument("data", nargs="?", default=os.path.join(ROOT, "fixtures/test.npy"))
ap.add_argument("--samples", type=int, default=500)
ap.add_argument("--trials", type=int, default=50)
ap.add_argument("--engines", default="onnxruntime,tract")
ap.add_argument("--bers", default="1e-7,1e-6,1e-5")
args = ap.parse_args()

binary = os.path.join(ROOT, "target/release/fitact-onnx")
if not os.path.exists(binary):
    sys.exit("build first: cargo build --release")
data = np.load(args.data)[: args.samples].astype(np.float32)
tmp = tempfile.mkdtemp()
data_path = os.path.join(tmp, "data.npy")
np.save(data_path, data)
model = onnx.load(args.model)
rng = np.random.default_rng(0)


def python_trial(ber, threads):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.data_type != onnx.TensorProto.FLOAT:
            continue
        w = nh.to_array(t).copy()
        bits = w.view(np.uint32).reshape(-1)
        n = rng.binomial(bits.size * 32, ber)
        if n:
            pos = rng.choice(bits.size * 32, size=n, replace=False)
            np.bitwise_xor.at(bits, pos // 32, (np.uint32(1) << (pos % 32).astype(np.uint32)))
        t.CopyFrom(nh.from_array(w, t.name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sess = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for i in range(0, len(data), 256):
        sess.run(None, {name: data[i : i + 256]})


def ours(ber, threads, engine):
    start = time.perf_counter()
    subprocess.run(
        [binary, "evaluate", args.model, "--data", data_path, "--ber", str(ber), "--trials", str(args.trials),
         "--seed", "1", "--threads", str(threads), "--engine", engine, "-q"],
        check=True,
    )
    return time.perf_counter() - start


cores = os.cpu_count() or 1
print(f"model {os.path.basename(args.model)}, {len(data)} samples, {args.trials} trials per BER")
engines = [e for e in args.engines.split(",") if e]
print(f"{'BER':>8} {'threads':>7} {'python trials/s':>16}" + "".join(f" {e + ' trials/s':>22} {e + '/python':>20}" for e in engines))
for ber in [float(b) for b in args.bers.split(",")]:
    for threads in sorted({1, cores}):
        start = time.perf_counter()
        for _ in range(args.trials):
            python_trial(ber, threads)
        py = args.trials / (time.perf_counter() - start)
        # Ours includes loading the model and its fault-free run, as a user's command does.
        cells = ""
        for engine in engines:
            us = args.trials / ours(ber, threads, engine)
            cells += f" {us:>22.2f} {us / py:>19.2f}x"
        print(f"{ber:>8.0e} {threads:>7} {py:>16.2f}{cells}")
