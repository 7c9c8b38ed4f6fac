"""Checks a hardened int8 or float16 model against its original in onnxruntime.

usage: precision_check.py ORIGINAL HARDENED CALIB.npy [--searched]

- the onnx checker's full check passes;
- the outputs are equal at the calibration feeds (the bounds keep every calibrated value;
  not asked with --searched: a search's tighter bounds may cut some);
- onnxruntime's optimized graph (ORT_ENABLE_ALL, one thread) keeps as many integer kernels
  (QLinearConv, QGemm, QLinearAdd, QLinearMatMul) as the original's: the bounds sit in the
  integers, not in float islands;
- the model's bound tensors have the activations' type (no float32 tensor in a float16 body).
Prints one JSON line of what it saw.
"""

import json
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

KERNELS = ("QLinearConv", "QGemm", "QLinearAdd", "QLinearMatMul")


def session(path, optimized=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if optimized:
        options.optimized_model_filepath = optimized
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def kernels(path):
    with tempfile.NamedTemporaryFile(suffix=".onnx") as out:
        session(path, out.name)
        graph = onnx.load(out.name).graph
    return {k: sum(n.op_type == k for n in graph.node) for k in KERNELS}


def main(original, hardened, calib, *flags):
    onnx.checker.check_model(onnx.load(hardened), full_check=True)
    a, b = session(original), session(hardened)
    x = np.load(calib)[:64]
    feed = a.get_inputs()[0]
    x = x.astype(np.float16 if feed.type == "tensor(float16)" else np.float32)
    ya, yb = a.run(None, {feed.name: x})[0], b.run(None, {feed.name: x})[0]
    diff = float(np.abs(ya.astype(np.float32) - yb.astype(np.float32)).max())
    assert diff <= 1e-5 or "--searched" in flags, f"outputs differ by {diff}"
    ka, kb = kernels(original), kernels(hardened)
    assert ka == kb, f"integer kernels {ka} in the original, {kb} hardened"
    model = onnx.load(hardened)
    added = [t for t in model.graph.initializer if "/fitact/" in t.name]
    assert added, "no bound tensor"
    types = sorted({onnx.TensorProto.DataType.Name(t.data_type) for t in added})
    print(json.dumps({"max_diff": diff, "kernels": kb, "bound_types": types}))


if __name__ == "__main__":
    main(*sys.argv[1:])
