"""Writes a small model with a `com.microsoft` operator between float layers, and its data.

    python3 make_contrib_model.py OUT_DIR

OUT_DIR/contrib.onnx: x [N, 8] -> MatMul -> Relu -> com.microsoft Gelu -> MatMul -> y [N, 4]
(default opset 17, com.microsoft 1), and OUT_DIR/contrib.npz with 32 samples of x. The tool
must bound the Relu and pass the contrib operator through untouched.
"""
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
w1 = numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "W1")
w2 = numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "W2")
nodes = [
    helper.make_node("MatMul", ["x", "W1"], ["a"], name="fc1"),
    helper.make_node("Relu", ["a"], ["r"], name="relu"),
    helper.make_node("Gelu", ["r"], ["g"], name="gelu", domain="com.microsoft"),
    helper.make_node("MatMul", ["g", "W2"], ["y"], name="fc2"),
]
graph = helper.make_graph(
    nodes,
    "contrib",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    [w1, w2],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
model.ir_version = 8
onnx.save(model, out / "contrib.onnx")
np.savez(out / "contrib.npz", x=rng.normal(size=(32, 8)).astype(np.float32))
