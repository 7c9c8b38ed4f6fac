"""Models whose activations are not all Relus, for the pattern and beyond-relu tests:

    python3 activation_graphs.py OUTDIR

writes into OUTDIR, each with input "x" [N, 1, 8, 8], output "logits" [N, 3], and samples `x.npy`:
- zoo.onnx (opset 17): one of every activation the tool recognises, each after its own 4-channel
  Conv, in a chain: hard-swish as `(x * Clip(x + 3, 0, 6)) / 6`, as `x * (Clip(x + 3, 0, 6) * 1/6)`,
  as `x * HardSigmoid(x)` and as the HardSwish op; SiLU `x * Sigmoid(x)`; GELU in torch's erf
  form and in its tanh form with `(x * 0.5) * (1 + tanh)` and as torch writes it (x^3 as
  `x * (x * x)`, constants in Constant nodes); a BatchNormalization read by a residual
  Add; LeakyRelu, PRelu, Relu6 as Clip(0, 6), Sigmoid, Tanh, Relu; and two near misses: a
  `Clip(c + 3, 0, 6)` multiplied by another tensor (a Clip, not a hard-swish) and
  `other * Sigmoid(c)` (a Sigmoid, not a SiLU).
- zoo_opset11.onnx: the same without the HardSwish op, at opset 11 (strict comparisons).
Prints the expected activations as JSON: [[kind, form], ...] in node order, per model.
"""
import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

out = pathlib.Path(sys.argv[1])
rng = np.random.default_rng(3)


def build(opset, with_hardswish_op):
    nodes, inits, expected = [], [], []
    counter = [0]

    def const(value, name=None):
        counter[0] += 1
        name = name or f"k{counter[0]}"
        inits.append(nh.from_array(np.array(value, np.float32), name))
        return name

    def conv(x, cin=4):
        counter[0] += 1
        i = counter[0]
        w = nh.from_array((rng.normal(size=(4, cin, 3, 3)) * 0.25).astype(np.float32), f"w{i}")
        b = nh.from_array((rng.normal(size=(4,)) * 0.2).astype(np.float32), f"b{i}")
        inits.extend([w, b])
        nodes.append(h.make_node("Conv", [x, w.name, b.name], [f"conv{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        return f"conv{i}"

    def n(op, inputs, name, **attrs):
        nodes.append(h.make_node(op, inputs, [name], name=name, **attrs))
        return name

    x = conv("x", 1)
    # hard-swish, (x * Clip(x + 3, 0, 6)) / 6
    a = n("Add", [x, const(3.0)], "hs1_add")
    c = n("Clip", [a, const(0.0), const(6.0)], "hs1_clip")
    m = n("Mul", [x, c], "hs1_mul")
    x = n("Div", [m, const(6.0)], "hs1_div")
    expected.append(["HardSwish", "x * Clip(x + 3, 0, 6) / 6"])
    # hard-swish, x * (Clip(3 + x, 0, 6) * 1/6)
    x = conv(x)
    a = n("Add", [const(3.0), x], "hs2_add")
    c = n("Clip", [a, const(0.0), const(6.0)], "hs2_clip")
    s = n("Mul", [c, const(1.0 / 6.0)], "hs2_scale")
    x = n("Mul", [s, x], "hs2_mul")
    expected.append(["HardSwish", "x * Clip(x + 3, 0, 6) / 6"])
    # hard-swish, x * HardSigmoid(x)
    x = conv(x)
    hs = n("HardSigmoid", [x], "hs3_hsig", alpha=1.0 / 6.0, beta=0.5)
    x = n("Mul", [x, hs], "hs3_mul")
    expected.append(["HardSwish", "x * HardSigmoid(x)"])
    if with_hardswish_op:
        x = conv(x)
        x = n("HardSwish", [x], "hs4")
        expected.append(["HardSwish", "HardSwish"])
    # SiLU
    x = conv(x)
    sg = n("Sigmoid", [x], "silu_sig")
    x = n("Mul", [sg, x], "silu_mul")
    expected.append(["SiLU", "x * Sigmoid(x)"])
    # GELU, torch's erf form
    x = conv(x)
    d = n("Div", [x, const(1.4142135381698608)], "gelu1_div")
    e = n("Erf", [d], "gelu1_erf")
    a = n("Add", [e, const(1.0)], "gelu1_add")
    m = n("Mul", [x, a], "gelu1_mul")
    x = n("Mul", [m, const(0.5)], "gelu1_half")
    expected.append(["GELU", "x * 0.5 * (1 + Erf(x / sqrt 2))"])
    # GELU, tanh form, (x * 0.5) * (1 + tanh)
    x = conv(x)
    p = n("Pow", [x, const(3.0)], "gelu2_pow")
    m = n("Mul", [const(0.044715), p], "gelu2_cube")
    a = n("Add", [x, m], "gelu2_inner")
    s = n("Mul", [a, const(0.7978845834732056)], "gelu2_scale")
    t = n("Tanh", [s], "gelu2_tanh")
    a = n("Add", [const(1.0), t], "gelu2_add")
    hx = n("Mul", [x, const(0.5)], "gelu2_halfx")
    x = n("Mul", [hx, a], "gelu2_out")
    expected.append(["GELU", "x * 0.5 * (1 + Tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))"])
    # GELU, tanh form as torch exports it: x^3 as x * (x * x), constants in Constant nodes
    x = conv(x)

    def constant_node(value, name):
        nodes.append(h.make_node("Constant", [], [name], value=nh.from_array(np.array(value, np.float32))))
        return name

    sq = n("Mul", [x, x], "gelu3_sq")
    cube = n("Mul", [x, sq], "gelu3_cube")
    m = n("Mul", [constant_node(0.044715, "gelu3_c1"), cube], "gelu3_term")
    a = n("Add", [x, m], "gelu3_inner")
    s = n("Mul", [constant_node(0.7978845834732056, "gelu3_c2"), a], "gelu3_scale")
    t = n("Tanh", [s], "gelu3_tanh")
    a = n("Add", [constant_node(1.0, "gelu3_one"), t], "gelu3_add")
    m = n("Mul", [x, a], "gelu3_mul")
    x = n("Mul", [constant_node(0.5, "gelu3_half"), m], "gelu3_out")
    expected.append(["GELU", "x * 0.5 * (1 + Tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))"])
    # BatchNormalization into a residual Add (a linear bottleneck)
    skip = x
    x = conv(x)
    bn = [nh.from_array(v.astype(np.float32), f"bn_{k}") for k, v in
          [("scale", rng.uniform(0.5, 1.5, 4)), ("bias", rng.normal(size=4) * 0.1),
           ("mean", rng.normal(size=4) * 0.1), ("var", rng.uniform(0.5, 1.5, 4))]]
    inits.extend(bn)
    b = n("BatchNormalization", [x] + [t.name for t in bn], "bn")
    x = n("Add", [b, skip], "residual")
    expected.append(["Norm", "BatchNormalization -> Add"])
    # the single operators
    x = n("LeakyRelu", [conv(x)], "leaky", alpha=0.1)
    expected.append(["LeakyRelu", "LeakyRelu"])
    slope = nh.from_array((rng.uniform(0.05, 0.3, (4, 1, 1))).astype(np.float32), "prelu_slope")
    inits.append(slope)
    x = n("PRelu", [conv(x), slope.name], "prelu")
    expected.append(["PRelu", "PRelu"])
    x = n("Clip", [conv(x), const(0.0), const(6.0)], "relu6")
    expected.append(["Clip", "Clip"])
    # near miss: Clip(c + 3, 0, 6) times another tensor
    c = conv(x)
    a = n("Add", [c, const(3.0)], "nm_add")
    cl = n("Clip", [a, const(0.0), const(6.0)], "nm_clip")
    expected.append(["Clip", "Clip"])
    x = n("Mul", [x, cl], "nm_mul")
    x = n("Sigmoid", [conv(x)], "sig")
    expected.append(["Sigmoid", "Sigmoid"])
    # near miss: other * Sigmoid(c)
    c = conv(x)
    sg = n("Sigmoid", [c], "nm_sig")
    expected.append(["Sigmoid", "Sigmoid"])
    x = n("Mul", [x, sg], "nm_gate")
    x = n("Tanh", [conv(x)], "tanh")
    expected.append(["Tanh", "Tanh"])
    x = n("Relu", [conv(x)], "relu")
    expected.append(["Relu", "Relu"])
    n("GlobalAveragePool", [x], "pool")
    n("Flatten", ["pool"], "flat")
    fc_w = nh.from_array((rng.normal(size=(3, 4)) * 0.5).astype(np.float32), "fc_w")
    fc_b = nh.from_array(np.zeros(3, np.float32), "fc_b")
    inits.extend([fc_w, fc_b])
    nodes.append(h.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1))
    graph = h.make_graph(nodes, "zoo", [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 8, 8])],
                         [h.make_tensor_value_info("logits", T.FLOAT, ["N", 3])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    return model, expected


report = {}
for name, opset, op in [("zoo", 17, True), ("zoo_opset11", 11, False)]:
    model, expected = build(opset, op)
    onnx.save(model, out / f"{name}.onnx")
    report[name] = expected
np.save(out / "x.npy", rng.normal(size=(96, 1, 8, 8)).astype(np.float32))
print(json.dumps(report))
