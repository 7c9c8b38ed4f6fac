"""Small models built the ways real exporters build them, for the end-to-end tests:

    python3 graphs.py OUTDIR

writes into OUTDIR, each with the same input "x" [N, 1, 8, 8] and samples `x.npy`:
- if_branches.onnx: Relus inside both branches of an If whose condition depends on the data
  (the mean of the batch), one of them inside a nested If, reading outer-scope weights;
- constant_weights.onnx: every weight in a Constant node, none in initializers;
- relu_is_output.onnx: a Relu output that is also a graph output;
- shared_relu.onnx: a residual block whose Relu output feeds several consumers;
- unsupported_op.onnx: a Relu after an operator of a custom domain that no runtime knows;
- loop_body.onnx: a Relu inside the body of a Loop (two iterations);
- scan_body.onnx: a Relu inside the body of a Scan (over the channels).
Samples: 256 in batches of 64: the first two batches have a positive mean and the last two a
negative one (both branches of the If), and the second has a small maximum (both branches of
the nested If).
"""
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

out = pathlib.Path(sys.argv[1])
rng = np.random.default_rng(0)


def weight(name, *shape):
    return nh.from_array((rng.normal(size=shape) * 0.5).astype(np.float32), name)


def model(name, nodes, inits, outputs, opset=13, domains=(), check=True):
    graph = h.make_graph(nodes, name, [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 8, 8])], outputs, inits)
    imports = [h.make_opsetid("", opset)] + [h.make_opsetid(d, 1) for d in domains]
    m = h.make_model(graph, opset_imports=imports)
    if check:
        onnx.checker.check_model(m, full_check=True)
    onnx.save(m, out / f"{name}.onnx")


logits = h.make_tensor_value_info("logits", T.FLOAT, ["N", 3])
head = [
    h.make_node("GlobalAveragePool", ["feat"], ["pool"], name="gap"),
    h.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
    h.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
]

# --- If branches (nested), reading outer-scope weights.
conv_out = h.make_tensor_value_info("branch_out", T.FLOAT, None)
inner_then = h.make_graph(
    [h.make_node("Relu", ["c0"], ["inner_then_relu"], name="inner_then_relu"),
     h.make_node("Identity", ["inner_then_relu"], ["inner_out"])],
    "inner_then", [], [h.make_tensor_value_info("inner_out", T.FLOAT, None)])
inner_else = h.make_graph(
    [h.make_node("Neg", ["c0"], ["neg"]), h.make_node("Relu", ["neg"], ["inner_else_relu"], name="inner_else_relu"),
     h.make_node("Identity", ["inner_else_relu"], ["inner_out"])],
    "inner_else", [], [h.make_tensor_value_info("inner_out", T.FLOAT, None)])
then_branch = h.make_graph(
    [h.make_node("Conv", ["c0", "w1", "b1"], ["t1"], name="then_conv", pads=[1, 1, 1, 1]),
     h.make_node("Relu", ["t1"], ["then_relu"], name="then_relu"),
     h.make_node("ReduceMax", ["x"], ["xmax"], keepdims=0),
     h.make_node("Greater", ["xmax", "two"], ["big"]),
     h.make_node("If", ["big"], ["nested"], name="nested_if", then_branch=inner_then, else_branch=inner_else),
     h.make_node("Add", ["then_relu", "nested"], ["branch_out"])],
    "then", [], [conv_out])
else_branch = h.make_graph(
    [h.make_node("Mul", ["c0", "two"], ["e1"]),
     h.make_node("Relu", ["e1"], ["else_relu"], name="else_relu"),
     h.make_node("Identity", ["else_relu"], ["branch_out"])],
    "else", [], [conv_out])
model(
    "if_branches",
    [h.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
     h.make_node("ReduceMean", ["x"], ["xmean"], keepdims=0),
     h.make_node("Greater", ["xmean", "zero"], ["cond"]),
     h.make_node("If", ["cond"], ["feat"], name="branch", then_branch=then_branch, else_branch=else_branch)] + head,
    [weight("w0", 4, 1, 3, 3), weight("b0", 4), weight("w1", 4, 4, 3, 3), weight("b1", 4), weight("fc_w", 3, 4),
     weight("fc_b", 3), nh.from_array(np.array(0, np.float32), "zero"), nh.from_array(np.array(2, np.float32), "two")],
    [logits],
)

# --- Every weight in a Constant node.
consts = [h.make_node("Constant", [], [t.name], value=t) for t in
          [weight("cw0", 4, 1, 3, 3), weight("cb0", 4), weight("fc_w", 3, 4), weight("fc_b", 3)]]
model(
    "constant_weights",
    consts + [h.make_node("Conv", ["x", "cw0", "cb0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
              h.make_node("Relu", ["c0"], ["feat"], name="relu0")] + head,
    [], [logits],
)

# --- A Relu output that is also a graph output.
model(
    "relu_is_output",
    [h.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
     h.make_node("Relu", ["c0"], ["feat"], name="relu0")] + head,
    [weight("w0", 4, 1, 3, 3), weight("b0", 4), weight("fc_w", 3, 4), weight("fc_b", 3)],
    [logits, h.make_tensor_value_info("feat", T.FLOAT, ["N", 4, 8, 8])],
)

# --- A residual block: the first Relu's output feeds a Conv and the Add, the block's Relu
# feeds the head and a second output path.
model(
    "shared_relu",
    [h.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
     h.make_node("Relu", ["c0"], ["r0"], name="relu0"),
     h.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
     h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
     h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
     h.make_node("Add", ["c2", "r0"], ["sum"], name="residual"),
     h.make_node("Relu", ["sum"], ["feat"], name="relu2")] + head,
    [weight("w0", 4, 1, 3, 3), weight("b0", 4), weight("w1", 4, 4, 3, 3), weight("b1", 4), weight("w2", 4, 4, 3, 3),
     weight("b2", 4), weight("fc_w", 3, 4), weight("fc_b", 3)],
    [logits],
)

# --- A Relu behind an operator nobody implements.
model(
    "unsupported_op",
    [h.make_node("FancyNorm", ["x"], ["n"], name="fancy", domain="com.example"),
     h.make_node("Conv", ["n", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
     h.make_node("Relu", ["c0"], ["feat"], name="relu0")] + head,
    [weight("w0", 4, 1, 3, 3), weight("b0", 4), weight("fc_w", 3, 4), weight("fc_b", 3)],
    [logits], domains=["com.example"], check=False,
)

# --- A Relu inside a Loop body (applied twice to the loop-carried value).
body = h.make_graph(
    [h.make_node("Relu", ["v_in"], ["v_out"], name="loop_relu"), h.make_node("Identity", ["cond_in"], ["cond_out"])],
    "body",
    [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
     h.make_tensor_value_info("v_in", T.FLOAT, ["N", 4, 8, 8])],
    [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("v_out", T.FLOAT, ["N", 4, 8, 8])])
model(
    "loop_body",
    [h.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
     h.make_node("Loop", ["trip", "", "c0"], ["feat"], name="loop", body=body)] + head,
    [weight("w0", 4, 1, 3, 3), weight("b0", 4), weight("fc_w", 3, 4), weight("fc_b", 3),
     nh.from_array(np.array(2, np.int64), "trip")],
    [logits],
)

# --- A Relu inside a Scan body, over the channels of conv0.
scan_body = h.make_graph(
    [h.make_node("Relu", ["elem"], ["elem_out"], name="scan_relu")],
    "body",
    [h.make_tensor_value_info("elem", T.FLOAT, ["N", 8, 8])],
    [h.make_tensor_value_info("elem_out", T.FLOAT, ["N", 8, 8])])
model(
    "scan_body",
    [h.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
     h.make_node("Scan", ["c0"], ["feat"], name="scan", body=scan_body, num_scan_inputs=1,
                 scan_input_axes=[1], scan_output_axes=[1])] + head,
    [weight("w0", 4, 1, 3, 3), weight("b0", 4), weight("fc_w", 3, 4), weight("fc_b", 3)],
    [logits],
)

x = rng.normal(size=(256, 1, 8, 8)).astype(np.float32)
x[:128] += 0.5
x[128:] -= 0.5
x[64:128] = x[64:128] * 0.2 + 0.5  # a batch with a small maximum: the nested If's else branch
np.save(out / "x.npy", x)
