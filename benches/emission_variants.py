#!/usr/bin/env python3
"""Alternative emissions of the zero-mode bound, for timing against the current one.

The current zero-mode emission (passes/src/bound_activations/plain.rs) replaces `Y = Relu(X)` by

    K = LessOrEqual(X, B)    T = Where(K, X, 0)    Y = Max(T, 0)

which removes the Relu, so neither tract nor onnxruntime can fuse it into the Conv/Gemm
before it, and adds three element-wise passes. This script writes, for each fixture, the
fitact/channel and clipact/layer models (made with the release CLI) rewritten as

    "relufirst":   R = Relu(X)    K = LessOrEqual(R, B)    Y = Where(K, R, 0)

which is the same function (negative -> 0 through Relu; NaN and +Inf fail `R <= B` whatever
Relu makes of them, so they give 0) but keeps Conv+Relu fusable and has one pass fewer.
It checks the function on [-1, 0.5, 2, NaN, +Inf, -Inf] with bound 1 in onnxruntime and that
the rewritten models give the original logits, then writes
OUT/{model}.{variant}.onnx; `FITACT_BENCH_EXTRA_DIR=OUT cargo bench --bench inference` and
`benches/ort.py --extra-dir OUT` time them beside the standard variants.

Usage: python3 benches/emission_variants.py --out DIR [--bin target/release/fitact-onnx]
       [--models alexnet,vgg,resnet]
"""

import argparse
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")


def relu_first(model):
    """Rewrites every LessOrEqual -> Where -> Max(., 0) triple into Relu -> LessOrEqual -> Where."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    new_nodes, drop, count = [], set(), 0
    replacement = {}
    for node in graph.node:
        if node.op_type != "Max" or len(node.input) != 2:
            continue
        where = producers.get(node.input[0])
        if where is None or where.op_type != "Where" or where.input[2] != node.input[1]:
            continue
        keep = producers.get(where.input[0])
        if keep is None or keep.op_type != "LessOrEqual" or keep.input[0] != where.input[1]:
            continue
        x, bound, zero, y = keep.input[0], keep.input[1], where.input[2], node.output[0]
        r = y + "/relufirst/relu"
        k = y + "/relufirst/keep"
        replacement[id(keep)] = [
            helper.make_node("Relu", [x], [r], name=r),
            helper.make_node("LessOrEqual", [r, bound], [k], name=k),
            helper.make_node("Where", [k, r, zero], [y], name=y + "/relufirst/where"),
        ]
        drop.update({id(where), id(node)})
        count += 1
    for node in graph.node:
        if id(node) in replacement:
            new_nodes.extend(replacement[id(node)])
        elif id(node) not in drop:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return count


def check_function():
    x = np.array([-1, 0.5, 2, np.nan, np.inf, -np.inf], dtype=np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("LessOrEqual", ["r", "b"], ["k"]),
            helper.make_node("Where", ["k", "r", "z"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
        [helper.make_tensor("b", TensorProto.FLOAT, [], [1.0]),
         helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    expected = np.array([0, 0.5, 0, 0, 0, 0], dtype=np.float32)
    if not np.array_equal(y, expected):
        sys.exit(f"relufirst gives {y} in onnxruntime, expected {expected}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "fitact-onnx"))
    p.add_argument("--models", default=os.environ.get("FITACT_BENCH_MODELS", "alexnet,vgg,resnet"))
    args = p.parse_args()
    check_function()
    os.makedirs(args.out, exist_ok=True)
    calib = os.path.join(FIXTURES, "calib.npy")
    x = np.load(calib)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        src = os.path.join(FIXTURES, f"{name}.onnx")
        if not os.path.exists(src):
            print(f"# skipping {name}: {src} does not exist")
            continue
        ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        for method, gran in (("fitact", "channel"), ("clipact", "layer")):
            hardened = os.path.join(args.out, f".{name}.{method}-{gran}.onnx")
            subprocess.run([args.bin, "--quiet", "harden", src, hardened, "--calib", calib,
                            "--method", method, "--granularity", gran], check=True)
            model = onnx.load(hardened)
            n = relu_first(model)
            onnx.checker.check_model(model)
            out = os.path.join(args.out, f"{name}.{method}-{gran}-relufirst.onnx")
            onnx.save(model, out)
            y = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            diff = float(np.abs(y - ref).max())
            print(f"{out}: {n} bounds rewritten, max |logit - original| = {diff:.3g}")
            os.remove(hardened)


if __name__ == "__main__":
    main()
