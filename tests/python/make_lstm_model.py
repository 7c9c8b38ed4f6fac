"""Writes a small LSTM model whose state inputs carry the batch in their middle axis, and data.

    python3 make_lstm_model.py OUT_DIR

OUT_DIR/lstm.onnx: x [T=6, N, 5], h0 [1, N, 8], c0 [1, N, 8] -> LSTM (forward, hidden 8) ->
Y_h [1, N, 8] -> Squeeze -> Relu -> MatMul -> y [N, 3], opset 17. OUT_DIR/lstm.npz holds 24
whole feeds: x (24, 6, 1, 5), h0 and c0 (24, 1, 1, 8). tract could not unify the state's batch
with a symbolic one (`Impossible to unify Sym(N) with Val(1)`): the tool must run it one sample
at a time.
"""
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = Path(sys.argv[1])
rng = np.random.default_rng(1)
T, I, H, C, S = 6, 5, 8, 3, 24
init = [
    numpy_helper.from_array((0.4 * rng.normal(size=(1, 4 * H, I))).astype(np.float32), "W"),
    numpy_helper.from_array((0.4 * rng.normal(size=(1, 4 * H, H))).astype(np.float32), "R"),
    numpy_helper.from_array((0.1 * rng.normal(size=(1, 8 * H))).astype(np.float32), "B"),
    numpy_helper.from_array(rng.normal(size=(H, C)).astype(np.float32), "Wo"),
    numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"),
]
nodes = [
    helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["", "Y_h"], name="lstm", hidden_size=H),
    helper.make_node("Squeeze", ["Y_h", "axes0"], ["h"], name="squeeze"),
    helper.make_node("Relu", ["h"], ["r"], name="relu"),
    helper.make_node("MatMul", ["r", "Wo"], ["y"], name="head"),
]
graph = helper.make_graph(
    nodes,
    "lstm",
    [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, "N", I]),
        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "N", H]),
        helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "N", H]),
    ],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", C])],
    init,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, out / "lstm.onnx")
np.savez(
    out / "lstm.npz",
    x=rng.normal(size=(S, T, 1, I)).astype(np.float32),
    h0=np.tanh(rng.normal(size=(S, 1, 1, H))).astype(np.float32),
    c0=rng.normal(size=(S, 1, 1, H)).astype(np.float32),
)
