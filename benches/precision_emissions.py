#!/usr/bin/env python3
"""Candidate bound emissions for int8 (QDQ) and float16 models, timed in onnxruntime.

Reads the fixtures of fixtures/make_precision_fixtures.py (fixtures/precision/) and the float32
fixtures they come from. Every emission is a small graph edit made here, at every activation
site: in an int8 QDQ model a site is the QuantizeLinear whose input is a Relu or HardSwish output
of the float32 source (the quantizer keeps those tensor names; a Relu is absorbed into the uint8
range starting at zero point 0); in a float16 model it is a Relu or HardSwish node.

int8 forms (bounds: per channel, the largest uint8 value the int8 model itself writes at the
site over calib.npy[:128], so that every form keeps the model's outputs on those samples):
    i_where    between Q and DQ:  Y = Where(LessOrEqual(q, Bq), q, zp)   (uint8, Bq [C,1,1])
    ii_min     between Q and DQ:  Y = Min(q, Bq)
    iii_float  after each DQ:     Where(LessOrEqual(y, B), y, 0) -> Q -> DQ (same scale, zp)
    iv_layer   the Q/DQ scale tightened so that 255 lands on the layer bound (no new node)
    iv_chan    the same per channel: QuantizeLinear/DequantizeLinear with axis=1, scale [C]
    v_clip     between Q and DQ:  Clip(q, -, max_c Bq)  (uint8 scalar: a layer saturate)
    v_where_layer, v_min_layer   i_where, ii_min with the scalar bound max_c Bq
float16 forms (bounds: per channel, the next float16 above the largest value over calib[:128]):
    i_scaled   Mul(S), ThresholdedRelu, Div(S), ThresholdedRelu, S = -1/B rounded toward 0 (float16)
    ii_where   Where(LessOrEqual(x, B), x, 0)
    iii_min    Min(x, B)
    iv_clip    Clip(x, 0, b) (Relu) / Clip(x, -, b) (HardSwish), b = the layer's largest bound

For each variant: the number of QLinearConv / Cast / Transpose nodes in onnxruntime's optimized
graph (ORT_ENABLE_ALL, the default, and EXTENDED), whether its logits equal the original's on
calib[:128], its accuracy on test.npy, and its inference time (1 intra- and inter-op thread,
batch 1, RUNS single-sample runs per round, a round's time is its median run, variants
interleaved in every round, ROUNDS rounds; the table gives the median time over rounds, the
ratio of medians to the original's, the median and range over rounds of the ratio to the
original timed in the same round, and the ratio of the fastest rounds).

Sections (all by default): patterns (what sits between two convolutions of the QDQ ResNet),
int8, qop (the integer forms on resnet_qop, after each QLinearConv/QLinearAdd with zero point 0), fp16, faults (bit flips in the stored int8 weights, int32 biases and float32 scales of
resnet_qdq at BER 1e-4, the same positions for every variant, paired trials on test[:500]).

Usage: python3 benches/precision_emissions.py [--sections patterns,int8,qop,fp16,faults]
       [--rounds 11] [--runs 200] [--trials 20] [--ber 1e-4] [--dtypes int8,int32,float] [--json OUT.json]
"""

import argparse
import collections
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
PRECISION = os.path.join(FIXTURES, "precision")
CALIB_SAMPLES = 128
ACTIVATIONS = ("Relu", "HardSwish")
ALL = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
EXTENDED = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
BASIC = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
OPS_OF_INTEREST = ("QLinearConv", "QLinearAdd", "QGemm", "Conv", "Cast", "Transpose", "QuantizeLinear", "DequantizeLinear")


# ---------------------------------------------------------------- onnxruntime helpers


def session(model, level=ALL, optimized_path=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    so.log_severity_level = 3
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])


def optimized_ops(model, level):
    """Op counts of onnxruntime's optimized graph at `level`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "opt.onnx")
        session(model, level, path)
        return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def run_batches(sess, x, batch=250):
    inp = sess.get_inputs()[0]
    if inp.type == "tensor(float16)":
        x = x.astype(np.float16)
    outs = [sess.run(None, {inp.name: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def with_outputs(model, names, elem_type):
    """A copy of `model` that also outputs the tensors `names`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in names:
        m.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
    return m


# ---------------------------------------------------------------- graph edits


def producers(graph):
    return {o: n for n in graph.node for o in n.output}


def consumers(graph, tensor):
    return [n for n in graph.node if tensor in n.input]


def initializers(graph):
    return {t.name: t for t in graph.initializer}


def rewire(graph, old, new, skip):
    """Every reader of `old` except the nodes in `skip` reads `new` instead."""
    for n in graph.node:
        if id(n) in skip:
            continue
        for k, name in enumerate(n.input):
            if name == old:
                n.input[k] = new


def insert_after(graph, anchor, nodes):
    """Puts `nodes` right after the node `anchor` (keeps the graph topologically sorted)."""
    position = list(graph.node).index(anchor) + 1
    for k, n in enumerate(nodes):
        graph.node.insert(position + k, n)


def add_init(graph, name, array):
    graph.initializer.append(numpy_helper.from_array(array, name))
    return name


def bound_shape(channels, rank):
    return [channels] + [1] * (rank - 2)


def copy_model(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


# ---------------------------------------------------------------- int8 sites and bounds


class QSite:
    """One activation site of a QDQ model: its QuantizeLinear and what calibration saw there."""

    def __init__(self, q, scale, zero_point, kind, zp_name=None):
        self.q = q.name  # the node writing the uint8 tensor: a QuantizeLinear, or a QLinearConv/QLinearAdd
        self.tensor = q.output[0]
        self.zp_name = zp_name or q.input[2]
        self.activation = q.input[0]  # (QDQ) the float32 source's Relu/HardSwish output
        self.scale = scale  # float32 scalar
        self.zero_point = zero_point  # uint8 scalar
        self.kind = kind
        self.bq = None  # uint8 per channel: the largest q written over calib
        self.rank = None
        self.float_bq = None  # the float32 source's largest value per channel, quantized


def qdq_sites(model, source):
    """The QuantizeLinear nodes reading a Relu/HardSwish output of the float32 source."""
    kinds = {n.output[0]: n.op_type for n in source.graph.node if n.op_type in ACTIVATIONS}
    init = initializers(model.graph)
    sites = []
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in kinds:
            scale = numpy_helper.to_array(init[n.input[1]])
            zp = numpy_helper.to_array(init[n.input[2]])
            if scale.size != 1 or zp.dtype != np.uint8:
                sys.exit(f"{n.name}: expected a per-tensor uint8 QuantizeLinear")
            sites.append(QSite(n, np.float32(scale.reshape(())), np.uint8(zp.reshape(())), kinds[n.input[0]]))
    return sites


def qop_sites(model):
    """QOperator: the QLinearConv/QLinearAdd outputs with a uint8 zero point 0 (the Relu was
    absorbed; the Relu's tensor name is gone: the output is named `<Conv or Add output>_quantized`)."""
    init = initializers(model.graph)
    sites = []
    for n in model.graph.node:
        if n.op_type in ("QLinearConv", "QLinearAdd"):
            scale, zp = (numpy_helper.to_array(init[n.input[k]]) for k in (6, 7))
            if zp.dtype == np.uint8 and not zp.any():
                sites.append(QSite(n, np.float32(scale.reshape(())), np.uint8(0), n.op_type, zp_name=n.input[7]))
    return sites


def calibrate_uint8(model, sites, calib):
    """Per-channel maxima of the uint8 tensors at the sites (the int8 model itself, optimized)."""
    outs = run_batches(session(with_outputs(model, [s.tensor for s in sites], TensorProto.UINT8)), calib)[1:]
    for site, q in zip(sites, outs):
        axes = tuple(k for k in range(q.ndim) if k != 1)
        site.rank = q.ndim
        site.bq = q.max(axis=axes).astype(np.uint8)


def calibrate_qdq(model, source, sites, calib):
    """Per-channel maxima of q (int8 run, optimized as deployed) and of the float32 source."""
    names = [s.tensor for s in sites]
    outs = run_batches(session(with_outputs(model, names, TensorProto.UINT8)), calib)[1:]
    float_outs = run_batches(session(with_outputs(source, [s.activation for s in sites], TensorProto.FLOAT)), calib)[1:]
    for site, q, f in zip(sites, outs, float_outs):
        axes = tuple(k for k in range(q.ndim) if k != 1)
        site.rank = q.ndim
        site.bq = q.max(axis=axes).astype(np.uint8)
        fmax = f.max(axis=axes)
        site.float_bq = np.clip(np.round(fmax / site.scale) + int(site.zero_point), 0, 255).astype(np.uint8)
        site.float_values = f


def channel_bound(s):
    return s.bq.reshape(bound_shape(len(s.bq), s.rank))


def layer_bound(s):
    return np.array(s.bq.max(), np.uint8)


def variant_i_where(model, sites, bound_of=channel_bound):
    m = copy_model(model)
    g = m.graph
    nodes = {n.name: n for n in g.node}
    init = initializers(g)
    for s in sites:
        q = nodes[s.q]
        bq = add_init(g, s.tensor + "/bound", bound_of(s))
        keep, out = s.tensor + "/keep", s.tensor + "/bounded"
        new = [
            helper.make_node("LessOrEqual", [s.tensor, bq], [keep], name=s.tensor + "/le"),
            helper.make_node("Where", [keep, s.tensor, s.zp_name], [out], name=s.tensor + "/where"),
        ]
        assert init[s.zp_name].data_type == TensorProto.UINT8
        rewire(g, s.tensor, out, {id(n) for n in new})
        insert_after(g, q, new)
    return m


def variant_ii_min(model, sites, bound_of=channel_bound):
    m = copy_model(model)
    g = m.graph
    nodes = {n.name: n for n in g.node}
    for s in sites:
        bq = add_init(g, s.tensor + "/bound", bound_of(s))
        new = [helper.make_node("Min", [s.tensor, bq], [s.tensor + "/bounded"], name=s.tensor + "/min")]
        rewire(g, s.tensor, s.tensor + "/bounded", {id(n) for n in new})
        insert_after(g, nodes[s.q], new)
    return m


def variant_v_clip(model, sites):
    m = copy_model(model)
    g = m.graph
    nodes = {n.name: n for n in g.node}
    for s in sites:
        q = nodes[s.q]
        hi = add_init(g, s.tensor + "/max", np.array(s.bq.max(), np.uint8))
        new = [helper.make_node("Clip", [s.tensor, "", hi], [s.tensor + "/bounded"], name=s.tensor + "/clip")]
        rewire(g, s.tensor, s.tensor + "/bounded", {id(n) for n in new})
        insert_after(g, q, new)
    return m


def variant_iii_float(model, sites):
    """Float island after every DQ of the site: compare, zero, requantize with the same Q/DQ."""
    m = copy_model(model)
    g = m.graph
    nodes = {n.name: n for n in g.node}
    for s in sites:
        q = nodes[s.q]
        bound = (s.bq.astype(np.float32) - np.float32(s.zero_point)) * s.scale
        b = add_init(g, s.tensor + "/fbound", bound.astype(np.float32).reshape(bound_shape(len(bound), s.rank)))
        zero = add_init(g, s.tensor + "/fzero", np.array(0, np.float32))
        for k, dq in enumerate(consumers(g, s.tensor)):
            y = dq.output[0]
            p = f"{y}/island{k}"
            new = [
                helper.make_node("LessOrEqual", [y, b], [p + "/keep"], name=p + "/le"),
                helper.make_node("Where", [p + "/keep", y, zero], [p + "/kept"], name=p + "/where"),
                helper.make_node("QuantizeLinear", [p + "/kept", q.input[1], q.input[2]], [p + "/q"], name=p + "/q"),
                helper.make_node("DequantizeLinear", [p + "/q", q.input[1], q.input[2]], [p + "/dq"], name=p + "/dq"),
            ]
            rewire(g, y, p + "/dq", {id(n) for n in new})
            insert_after(g, dq, new)
    return m


def readers_of(g, name):
    return [n for n in g.node if name in n.input]


def set_initializer(g, name, array, users, fresh):
    """Writes `array` under `name` when only `users` read it (so a fault campaign that flips the
    same named words hits the same role in every variant), else under the new name `fresh`;
    returns the name the users must read."""
    if {id(n) for n in readers_of(g, name)} <= {id(n) for n in users}:
        init = initializers(g)[name]
        init.CopyFrom(numpy_helper.from_array(array, name))
        return name
    return add_init(g, fresh, array)


def retarget_scale(g, s, q, scale, zero_point, axis=None):
    """Gives the site's Q and every DQ reading it a new scale and zero point."""
    users = [q] + consumers(g, s.tensor)
    sc = set_initializer(g, q.input[1], scale, users, s.tensor + "/scale")
    zp = set_initializer(g, q.input[2], zero_point, users, s.tensor + "/zero_point")
    for n in users:
        n.input[1], n.input[2] = sc, zp
        if axis is not None:
            n.attribute.append(helper.make_attribute("axis", axis))


def tightened(s, high):
    """Scale and zero point of a uint8 range from the site's own low end to `high` (float);
    never looser than the site's own range, and a dead channel keeps a non-zero one."""
    low = (0.0 - float(s.zero_point)) * float(s.scale)
    high = np.maximum(high, np.float64(s.scale))
    scale = np.minimum(((high - low) / 255.0).astype(np.float32), s.scale)
    zp = np.clip(np.round(-low / scale), 0, 255).astype(np.uint8)
    return scale, zp


def requantize_biases(g, s, new_scale):
    """The int32 bias of every Conv/Gemm reading the site (through its DQ) requantized to
    x_scale' * w_scale, as the quantizer stores it; onnxruntime forms a QLinearConv only when
    the bias scale is the product (measured: without this, every such Conv stays float)."""
    init = initializers(g)
    prod = producers(g)
    for dq in consumers(g, s.tensor):
        for n in consumers(g, dq.output[0]):
            if n.op_type not in ("Conv", "Gemm") or n.input[0] != dq.output[0] or len(n.input) < 3:
                continue
            bias_dq, w_dq = prod.get(n.input[2]), prod.get(n.input[1])
            if bias_dq is None or bias_dq.op_type != "DequantizeLinear":
                continue
            w_scale = numpy_helper.to_array(init[w_dq.input[1]]).astype(np.float32)
            q_bias = numpy_helper.to_array(init[bias_dq.input[0]])
            bias = q_bias.astype(np.float64) * numpy_helper.to_array(init[bias_dq.input[1]]).astype(np.float64)
            b_scale = (np.float32(new_scale) * w_scale).astype(np.float32)
            new_q = np.clip(np.round(bias / b_scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
            tag = n.name or n.output[0]
            bias_dq.input[0] = set_initializer(g, bias_dq.input[0], new_q, [bias_dq], tag + "/bias_q")
            bias_dq.input[1] = set_initializer(g, bias_dq.input[1], b_scale, [bias_dq], tag + "/bias_scale")


def variant_iv_layer(model, sites, high_of, fix_bias=True):
    m = copy_model(model)
    g = m.graph
    nodes = {n.name: n for n in g.node}
    for s in sites:
        scale, zp = tightened(s, np.float64(high_of(s)))
        if scale == s.scale:
            continue
        retarget_scale(g, s, nodes[s.q], np.array(scale, np.float32), np.array(zp, np.uint8))
        if fix_bias:
            requantize_biases(g, s, scale)
    return m


def variant_iv_chan(model, sites):
    m = copy_model(model)
    g = m.graph
    nodes = {n.name: n for n in g.node}
    for s in sites:
        high = (s.bq.astype(np.float64) - float(s.zero_point)) * float(s.scale)
        scale, zp = tightened(s, high)
        retarget_scale(g, s, nodes[s.q], scale.astype(np.float32), zp.astype(np.uint8), axis=1)
    return m


def layer_max(s):
    return (float(s.bq.max()) - float(s.zero_point)) * float(s.scale)


def layer_quantile(p):
    def high(s):
        return float(np.quantile(s.float_values, p))

    return high


def int8_variants(model, sites):
    """(name, model, optimization level); iv_chan also at BASIC, where onnxruntime does not fuse QDQ."""
    chan = variant_iv_chan(model, sites)
    return [
        ("original", model, ALL),
        ("i_where", variant_i_where(model, sites), ALL),
        ("ii_min", variant_ii_min(model, sites), ALL),
        ("iii_float", variant_iii_float(model, sites), ALL),
        ("iv_layer_max", variant_iv_layer(model, sites, layer_max), ALL),
        ("iv_layer_q9999", variant_iv_layer(model, sites, layer_quantile(0.9999)), ALL),
        ("iv_layer_q999", variant_iv_layer(model, sites, layer_quantile(0.999)), ALL),
        ("iv_q9999_nobias", variant_iv_layer(model, sites, layer_quantile(0.9999), fix_bias=False), ALL),
        ("iv_chan", chan, ALL),
        ("original_basic", model, BASIC),
        ("iv_chan_basic", chan, BASIC),
        ("v_clip", variant_v_clip(model, sites), ALL),
        ("v_where_layer", variant_i_where(model, sites, layer_bound), ALL),
        ("v_min_layer", variant_ii_min(model, sites, layer_bound), ALL),
    ]


# ---------------------------------------------------------------- float16 sites and bounds


def fp16_sites(model, calib):
    """(node name, output, op, per-channel float16 bound, rank) of every Relu/HardSwish."""
    acts = [n for n in model.graph.node if n.op_type in ACTIVATIONS]
    outs = run_batches(session(with_outputs(model, [n.output[0] for n in acts], TensorProto.FLOAT16)), calib)[1:]
    sites = []
    for n, y in zip(acts, outs):
        axes = tuple(k for k in range(y.ndim) if k != 1)
        top = y.max(axis=axes).astype(np.float16)
        bound = np.nextafter(top, np.float16(np.inf)).astype(np.float16)
        sites.append((n.name, n.output[0], n.op_type, bound, y.ndim))
    return sites


def fp16_emit(model, sites, make):
    m = copy_model(model)
    g = m.graph
    nodes = {n.name: n for n in g.node}
    for name, out, op, bound, rank in sites:
        raw = out + "/raw"
        node = nodes[name]
        node.output[0] = raw
        new = make(g, out, raw, op, bound.reshape(bound_shape(len(bound), rank)))
        insert_after(g, node, new)
    return m


def f32_next_up(v):
    return float(np.nextafter(np.float32(v), np.float32(np.inf)))


def scale_toward_zero(bound, dtype):
    """S ~ -1/B in `dtype`, rounded toward zero so that |S| <= 1/B: no value <= B is cut for
    the rounding of S (a dead channel's tiny bound gives the largest finite S)."""
    target = -1.0 / bound.astype(np.float64)
    s = np.maximum(target, np.finfo(dtype).min).astype(dtype)
    too_far = s.astype(np.float64) < target
    s[too_far] = np.nextafter(s[too_far], dtype(0))
    return s


def emit_scaled(g, out, raw, op, bound, dtype=np.float16):
    """The scaled threshold of bound_activations/scaled_threshold.rs, its S stored as `dtype`; a float32 one
    sits in a float32 island (Cast in, Cast out)."""
    s = add_init(g, out + "/scale", scale_toward_zero(bound, dtype))
    nodes, src, dst = [], raw, out
    if dtype == np.float32:
        src, dst = out + "/f32", out + "/f32_bounded"
        nodes.append(helper.make_node("Cast", [raw], [src], name=out + "/to_f32", to=TensorProto.FLOAT))
    nodes += [
        helper.make_node("Mul", [src, s], [out + "/scaled"], name=out + "/mul"),
        helper.make_node("ThresholdedRelu", [out + "/scaled"], [out + "/kept"], name=out + "/thr", alpha=-f32_next_up(1.0)),
        helper.make_node("Div", [out + "/kept", s], [out + "/unscaled"], name=out + "/div"),
        helper.make_node("ThresholdedRelu", [out + "/unscaled"], [dst], name=out + "/finite", alpha=float(np.finfo(np.float32).min)),
    ]
    if dtype == np.float32:
        nodes.append(helper.make_node("Cast", [dst], [out], name=out + "/to_f16", to=TensorProto.FLOAT16))
    return nodes


def emit_scaled_f32(g, out, raw, op, bound):
    return emit_scaled(g, out, raw, op, bound, np.float32)


def emit_clip_float32_model(g, out, raw, op, bound):
    """Clip with float32 scalars in a float32 model (the reference: fused into the Conv there)."""
    hi = add_init(g, out + "/max", np.array(bound.max(), np.float32))
    lo = add_init(g, out + "/min", np.array(0, np.float32)) if op == "Relu" else ""
    return [helper.make_node("Clip", [raw, lo, hi], [out], name=out + "/clip")]


def emit_clip_f32(g, out, raw, op, bound):
    """Clip with float32 scalars in a float32 island: Cast, Clip, Cast."""
    hi = add_init(g, out + "/max", np.array(bound.max(), np.float32))
    lo = add_init(g, out + "/min", np.array(0, np.float32)) if op == "Relu" else ""
    return [
        helper.make_node("Cast", [raw], [out + "/f32"], name=out + "/to_f32", to=TensorProto.FLOAT),
        helper.make_node("Clip", [out + "/f32", lo, hi], [out + "/f32_bounded"], name=out + "/clip"),
        helper.make_node("Cast", [out + "/f32_bounded"], [out], name=out + "/to_f16", to=TensorProto.FLOAT16),
    ]


def emit_where(g, out, raw, op, bound):
    b = add_init(g, out + "/bound", bound)
    z = add_init(g, out + "/zero", np.array(0, np.float16))
    return [
        helper.make_node("LessOrEqual", [raw, b], [out + "/keep"], name=out + "/le"),
        helper.make_node("Where", [out + "/keep", raw, z], [out], name=out + "/where"),
    ]


def emit_min(g, out, raw, op, bound):
    b = add_init(g, out + "/bound", bound)
    return [helper.make_node("Min", [raw, b], [out], name=out + "/min")]


def emit_clip(g, out, raw, op, bound):
    hi = add_init(g, out + "/max", np.array(bound.max(), np.float16))
    lo = add_init(g, out + "/min", np.array(0, np.float16)) if op == "Relu" else ""
    return [helper.make_node("Clip", [raw, lo, hi], [out], name=out + "/clip")]


def fp16_variants(model, sites):
    return [
        ("original", model, ALL),
        ("i_scaled", fp16_emit(model, sites, emit_scaled), ALL),
        ("ii_where", fp16_emit(model, sites, emit_where), ALL),
        ("iii_min", fp16_emit(model, sites, emit_min), ALL),
        ("iv_clip", fp16_emit(model, sites, emit_clip), ALL),
        ("v_scaled_f32", fp16_emit(model, sites, emit_scaled_f32), ALL),
        ("v_clip_f32", fp16_emit(model, sites, emit_clip_f32), ALL),
    ]


# ---------------------------------------------------------------- measuring


def time_variants(variants, x, rounds, runs, skip=()):
    """Median seconds per run of each variant in every round; variants interleaved (rotated) in every round."""
    sessions = []
    for name, model, level in variants:
        if name in skip:
            continue
        sess = session(model, level)
        inp = sess.get_inputs()[0]
        xs = x.astype(np.float16) if inp.type == "tensor(float16)" else x
        # Cycle through the samples: past the last one a slice is an empty batch, timed as a run.
        feeds = [{inp.name: xs[i % len(xs) : i % len(xs) + 1]} for i in range(runs)]
        for f in feeds[:20]:
            sess.run(None, f)  # warm up
        sessions.append((name, sess, feeds))
    per_round = collections.defaultdict(list)
    for r in range(rounds):
        order = sessions[r % len(sessions) :] + sessions[: r % len(sessions)]
        for name, sess, feeds in order:
            times = []
            for f in feeds:
                start = time.perf_counter()
                sess.run(None, f)
                times.append(time.perf_counter() - start)
            # The median run of a round: robust to the other processes of a shared machine.
            per_round[name].append(float(np.median(times)))
    return per_round


def describe_variants(variants, calib, x, labels):
    """Optimized-graph op counts, logits against the original on calib, accuracy; run errors recorded."""
    base = run_batches(session(variants[0][1]), calib)[0]
    rows = {}
    for name, model, level in variants:
        onnx.checker.check_model(model)
        row = {"level": "ALL" if level == ALL else "BASIC"}
        for lvl, tag in ((EXTENDED, "ext"), (level, "all")):
            c = optimized_ops(model, lvl)
            row[tag] = {k: c[k] for k in OPS_OF_INTEREST if c[k]}
            row[tag + "_nodes"] = sum(c.values())
        try:
            logits = run_batches(session(model, level), calib)[0]
        except Exception as e:
            row["error"] = str(e).split("Status Message: ")[-1].strip()[:300]
            print(f"{name}: onnxruntime fails at run time: {row['error']}")
            rows[name] = row
            continue
        row["max_abs_diff_calib"] = float(np.abs(logits.astype(np.float64) - base.astype(np.float64)).max())
        row["argmax_agree_calib"] = float((logits.argmax(1) == base.argmax(1)).mean())
        row["acc_2000"] = float((run_batches(session(model, level), x)[0].argmax(1) == labels).mean())
        rows[name] = row
    return rows


def timing_table(title, rows, per_round):
    base = np.median(per_round["original"])
    print(f"\n{title}")
    print(f"{'variant':16} {'ms/run':>8} {'ratio':>7} {'paired':>7} {'paired range':>13} {'min':>6} {'QLinearConv':>11} {'Cast':>5} {'Transp':>6} {'nodes':>6} {'maxdiff':>9} {'acc':>7}")
    out = {}
    for name, row in rows.items():
        if name not in per_round:
            print(f"{name:16} not timed: {row.get('error', '')[:100]}")
            out[name] = row
            continue
        t = per_round[name]
        med = float(np.median(t))
        ratios = [a / b for a, b in zip(t, per_round["original"])]
        a = row["all"]
        print(
            f"{name + ('' if row['level'] == 'ALL' else ' @BASIC'):16} {1e3 * med:8.4f} {med / base:7.3f} {np.median(ratios):7.3f} {min(ratios):6.3f}-{max(ratios):.3f} {min(t) / min(per_round['original']):6.3f} {a.get('QLinearConv', 0):>11} "
            f"{a.get('Cast', 0):>5} {a.get('Transpose', 0):>6} {row['all_nodes']:>6} {row['max_abs_diff_calib']:9.3g} {row['acc_2000']:7.4f}"
        )
        out[name] = dict(row, ms_median=1e3 * med, ratio=med / base, ratio_paired_median=float(np.median(ratios)), ratio_of_minima=min(t) / min(per_round["original"]), ratio_min=min(ratios), ratio_max=max(ratios), ms_rounds=[1e3 * v for v in t])
    return out


def int8_section(args, x, labels, calib, report):
    for name in ("resnet", "mobilenetv3"):
        model = onnx.load(os.path.join(PRECISION, f"{name}_qdq.onnx"))
        source = onnx.load(os.path.join(FIXTURES, f"{name}.onnx"))
        sites = qdq_sites(model, source)
        calibrate_qdq(model, source, sites, calib)
        report[f"{name}_qdq_sites"] = [
            {
                "tensor": s.tensor,
                "kind": s.kind,
                "scale": float(s.scale),
                "zero_point": int(s.zero_point),
                "channels": len(s.bq),
                "bq_max": int(s.bq.max()),
                "bq_min": int(s.bq.min()),
                "channels_where_float_bound_is_below_int8_max": int((s.float_bq < s.bq).sum()),
                "channels_where_float_bound_is_above_int8_max": int((s.float_bq > s.bq).sum()),
            }
            for s in sites
        ]
        variants = int8_variants(model, sites)
        rows = describe_variants(variants, calib, x, labels)
        failing = {n for n, r in rows.items() if "error" in r}
        per_round = time_variants(variants, calib, args.rounds, args.runs, failing)
        report[f"{name}_qdq"] = timing_table(f"{name}_qdq: {len(sites)} sites ({collections.Counter(s.kind for s in sites)})", rows, per_round)


def qop_section(args, x, labels, calib, report):
    """resnet_qop: the integer forms after each QLinearConv/QLinearAdd with zero point 0."""
    model = onnx.load(os.path.join(PRECISION, "resnet_qop.onnx"))
    sites = qop_sites(model)
    calibrate_uint8(model, sites, calib)
    variants = [
        ("original", model, ALL),
        ("i_where", variant_i_where(model, sites), ALL),
        ("ii_min", variant_ii_min(model, sites), ALL),
        ("v_clip", variant_v_clip(model, sites), ALL),
        ("v_where_layer", variant_i_where(model, sites, layer_bound), ALL),
        ("v_min_layer", variant_ii_min(model, sites, layer_bound), ALL),
    ]
    rows = describe_variants(variants, calib, x, labels)
    per_round = time_variants(variants, calib, args.rounds, args.runs)
    report["resnet_qop"] = timing_table(f"resnet_qop: {len(sites)} sites (QLinearConv/QLinearAdd with uint8 zero point 0)", rows, per_round)


def fp16_section(args, x, labels, calib, report):
    for name in ("resnet", "mobilenetv3"):
        model = onnx.load(os.path.join(PRECISION, f"{name}_fp16.onnx"))
        sites = fp16_sites(model, calib)
        variants = fp16_variants(model, sites)
        source = onnx.load(os.path.join(FIXTURES, f"{name}.onnx"))
        variants.append(("float32_source", source, ALL))
        variants.append(("float32_clip", fp16_emit(source, sites, emit_clip_float32_model), ALL))
        rows = describe_variants(variants, calib, x, labels)
        per_round = time_variants(variants, calib, args.rounds, args.runs)
        report[f"{name}_fp16"] = timing_table(f"{name}_fp16: {len(sites)} sites", rows, per_round)


# ---------------------------------------------------------------- QDQ patterns


def patterns_section(args, report):
    """What sits between each Conv of resnet_qdq and the next Conv/Add, and what onnxruntime forms."""
    model = onnx.load(os.path.join(PRECISION, "resnet_qdq.onnx"))
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    lines = []
    for conv in [n for n in g.node if n.op_type in ("Conv", "Add", "Gemm")]:
        chain = [conv.op_type]
        t = conv.output[0]
        readers = consumers(g, t)
        while len(readers) == 1 and readers[0].op_type in ("QuantizeLinear", "DequantizeLinear"):
            n = readers[0]
            tag = n.op_type.replace("uantizeLinear", "")
            if n.op_type == "QuantizeLinear":
                zp = init[n.input[2]]
                tag += f"(u8 zp={int(zp)})"
            chain.append(tag)
            t = n.output[0]
            readers = consumers(g, t)
        chain.append("->{" + ",".join(sorted(r.op_type for r in readers)) + "}")
        text = " -> ".join(chain[:-1]) + " " + chain[-1]
        lines.append(f"{conv.output[0]}: {text}")
    report["patterns"] = {"chains": lines}
    counts = {}
    for file in ("resnet_qdq", "resnet_qop", "mobilenetv3_qdq", "alexnet_qdq", "resnet_fp16", "mobilenetv3_fp16", "resnet_fp16_io"):
        m = onnx.load(os.path.join(PRECISION, file + ".onnx"))
        counts[file] = {tag: dict(optimized_ops(m, level)) for level, tag in ((EXTENDED, "extended"), (ALL, "all"))}
    report["optimized_op_counts"] = counts
    print("\nresnet_qdq: what follows each Conv/Add/Gemm")
    for line in lines:
        print("  " + line)
    for file, c in counts.items():
        print(f"{file}: EXTENDED {c['extended']}\n{' ' * len(file)}  ALL      {c['all']}")


# ---------------------------------------------------------------- faults


FAULT_DTYPES = {"int8": TensorProto.INT8, "int32": TensorProto.INT32, "float": TensorProto.FLOAT}


def fault_targets(model, dtypes):
    """(initializer name, dtype, element count) of the stored words a fault can hit: int8 weights,
    int32 biases, float32 scales (those of `dtypes`). Zero points and added bounds are left alone."""
    out = []
    for t in model.graph.initializer:
        if t.data_type in dtypes:
            out.append((t.name, t.data_type, int(np.prod(t.dims, dtype=np.int64))))
    return sorted(out)


def draw_flips(targets, ber, rng):
    """{name: [(element, bit)]} with each stored bit flipped independently with probability ber."""
    flips = {}
    for name, dtype, count in targets:
        bits = count * (8 if dtype == TensorProto.INT8 else 32)
        n = rng.binomial(bits, ber)
        if n:
            pos = rng.choice(bits, size=n, replace=False)
            width = 8 if dtype == TensorProto.INT8 else 32
            flips[name] = [(int(p // width), int(p % width)) for p in pos]
    return flips


def inject(model, flips):
    m = copy_model(model)
    for t in m.graph.initializer:
        if t.name not in flips:
            continue
        a = numpy_helper.to_array(t).copy()
        view = a.reshape(-1).view(np.uint8 if a.dtype == np.int8 else np.uint32)
        for element, bit in flips[t.name]:
            view[element] ^= view.dtype.type(1 << bit)
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    return m


def mean_ci(values):
    v = np.asarray(values, np.float64)
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(half)


def faults_section(args, x, labels, calib, report):
    model = onnx.load(os.path.join(PRECISION, "resnet_qdq.onnx"))
    source = onnx.load(os.path.join(FIXTURES, "resnet.onnx"))
    sites = qdq_sites(model, source)
    calibrate_qdq(model, source, sites, calib)
    variants = [
        ("original", model),
        ("i_where", variant_i_where(model, sites)),
        ("ii_min", variant_ii_min(model, sites)),
        ("iv_layer_q9999", variant_iv_layer(model, sites, layer_quantile(0.9999))),
        ("iv_layer_q999", variant_iv_layer(model, sites, layer_quantile(0.999))),
    ]
    targets = fault_targets(model, [FAULT_DTYPES[d] for d in args.dtypes.split(",")])
    for name, m in variants:
        init = initializers(m.graph)
        for t, dtype, count in targets:
            if t not in init or init[t].data_type != dtype or int(np.prod(init[t].dims)) != count:
                sys.exit(f"{name}: stored word {t} differs from the original's; fault positions would not pair")
    words = collections.Counter()
    for _, dtype, count in targets:
        words[TensorProto.DataType.Name(dtype)] += count
    xs, ys = x[: args.fault_samples], labels[: args.fault_samples]
    rng = np.random.default_rng(args.seed)
    acc = collections.defaultdict(list)
    flips_per_trial = []
    for trial in range(args.trials):
        flips = draw_flips(targets, args.ber, rng)
        flips_per_trial.append({k: len(v) for k, v in flips.items()})
        for name, m in variants:
            try:
                pred = run_batches(session(inject(m, flips)), xs)[0]
                acc[name].append(float((np.nan_to_num(pred).argmax(1) == ys).mean()))
            except Exception as e:  # a faulted model onnxruntime refuses counts as chance
                print(f"trial {trial} {name}: onnxruntime refused the faulted model: {str(e)[:120]}")
                acc[name].append(0.1)
    clean = {name: float((run_batches(session(m), xs)[0].argmax(1) == ys).mean()) for name, m in variants}
    print(f"\nfaults: resnet_qdq, BER {args.ber} on stored {dict(words)}, seed {args.seed}, {args.trials} paired trials, test[:{args.fault_samples}]")
    print(f"flips per trial: mean {np.mean([sum(f.values()) for f in flips_per_trial]):.1f}")
    print(f"{'variant':16} {'clean':>7} {'mean':>7} {'95% CI':>8} {'diff vs original (paired)':>28}")
    out = {"ber": args.ber, "seed": args.seed, "dtypes": args.dtypes, "trials": args.trials, "samples": args.fault_samples, "words": dict(words), "variants": {}}
    for name, _ in variants:
        mean, half = mean_ci(acc[name])
        dmean, dhalf = mean_ci(np.array(acc[name]) - np.array(acc["original"]))
        print(f"{name:16} {clean[name]:7.4f} {mean:7.4f} {half:8.4f} {dmean:+13.4f} +- {dhalf:.4f}")
        out["variants"][name] = {"clean": clean[name], "mean": mean, "ci95": half, "paired_diff": dmean, "paired_diff_ci95": dhalf, "trials": acc[name]}
    out["flip_counts_by_dtype"] = flip_counts_by_dtype(targets, flips_per_trial)
    report[f"faults_{args.dtypes}_{args.ber:g}"] = out


def flip_counts_by_dtype(targets, flips_per_trial):
    dtype_of = {name: TensorProto.DataType.Name(d) for name, d, _ in targets}
    totals = collections.Counter()
    for f in flips_per_trial:
        for name, k in f.items():
            totals[dtype_of[name]] += k
    return {k: v / len(flips_per_trial) for k, v in totals.items()}


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="patterns,int8,qop,fp16,faults")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--ber", type=float, default=1e-4)
    parser.add_argument("--fault-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--dtypes", default="int8,int32,float", help="stored words to flip: int8,int32,float")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    x = np.load(os.path.join(FIXTURES, "test.npy"))
    labels = np.load(os.path.join(FIXTURES, "test_labels.npy"))
    calib = np.load(os.path.join(FIXTURES, "calib.npy"))[:CALIB_SAMPLES]
    report = {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "args": vars(args)}
    sections = args.sections.split(",")
    if "patterns" in sections:
        patterns_section(args, report)
    if "int8" in sections:
        int8_section(args, x, labels, calib, report)
    if "qop" in sections:
        qop_section(args, x, labels, calib, report)
    if "fp16" in sections:
        fp16_section(args, x, labels, calib, report)
    if "faults" in sections:
        faults_section(args, x, labels, calib, report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
