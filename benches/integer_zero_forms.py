#!/usr/bin/env python3
"""Cheaper integer forms of a zero-above bound on uint8 activations, timed in onnxruntime (not CI).

On fixtures/precision/resnet_qdq.onnx (or another --fixture) every QuantizeLinear of an absorbed Relu (uint8, zero point 0;
sites and per-channel bounds Bq as in benches/precision_emissions.py: the largest q each channel
takes over calib.npy[:128] in the int8 model itself) gets one of these node sets between it and
its DequantizeLinear readers (B = Bq as a [C,1,1] uint8 tensor, zp the site's zero point):

    where        Where(LessOrEqual(q, B), q, zp)                     (what harden emits today)
    mul_mask     Mul(q, Cast(LessOrEqual(q, B), uint8))              (zp 0 only; opset 14)
    mul_mask_zp  Add(Mul(Sub(q, zp), Cast(LessOrEqual(q, B), uint8)), zp)   (any zp: uint8 wraps; opset 14)
    sub_mul      Sub(q, Mul(q, Cast(Greater(q, B), uint8)))          (zp 0 only; opset 14)
    gather_lut   Gather(T, Add(Cast(q, int32), 256 c)), T[256 c + v] = v if v <= B_c else zp
    gather_elem  GatherElements(T4, Cast(q, int32), axis 2), T4[0, c, v, w] = T[256 c + v] (batch 1 only)
    qlinear_where  com.microsoft QLinearWhere(LessOrEqual(q, B), q, s, zp, zp, s, zp, s, zp)
    qlinear_mul  com.microsoft QLinearMul(q, s, zp, Cast(LessOrEqual(q, B), uint8), 1, 0, s, zp)
    min_mod      Mod(Min(q, B + 1), B + 1)    (exact where B_c < 255; a channel with B_c = 255
                 has nothing above it and gets divisor 255, which zeroes its 255s: not exact there)
    float_island DequantizeLinear -> Where(LessOrEqual(y, b), y, 0) -> QuantizeLinear -> DequantizeLinear
    where_full, mul_mask_full, min_full   where, mul_mask, min with B repeated to [1, C, H, W]
    arith_full   Mul(q, Sub(1, Min(Sub(Max(q, B), B), 1)))   (no comparison, B as [1, C, H, W]; zp 0)
    not zero above a per-channel bound, for comparison:
    min          Min(q, B)                                           (saturate)
    mod_wrap     Mod(q, B + 1)   values above B wrap into [0, B]      (B_c = 255: divisor 255)
    eq255_where  Where(Equal(q, 255), zp, q)    scalar: zero only what saturated at the layer's 255
    mul_lt255    Mul(q, Cast(Less(q, 255), uint8))   the same as mul_mask
    mod255       Mod(q, 255)                    the same in one op (zp 0)
    clip_scalar  Clip(q, -, max_c Bq)            (a layer saturate)

Every variant (the original included) is run at opset 14, or the model's own if later (Mul/Sub/Add
take uint8 from 14); the original as stored (opset 13 for resnet) is timed too. For each form: whether its logits equal the `where` form's at
calib[:128] (batch 1 for gather_elem), whether its bounded tensors equal where's, onnxruntime's
optimized op counts (QLinearConv kept?), and the time over the original (1 thread, batch 1,
interleaved rounds, medians; time_variants of benches/precision_emissions.py).

With --harden-output H (fitact-onnx harden of fixtures/precision/<fixture>_qdq.onnx): harden's
Where forms rewritten as mul_mask / mul_mask_zp (rewrite_harden_output), checked against H on
all of test.npy and calib[:128], and timed. With --harden-after A as well (harden of the same fixture
by a later build, e.g. one that raises opset 13 to 14 and emits the mask itself): A's logits against
the rewrite's on the same samples, and A timed in the same interleaved rounds ("harden_after").

usage: python3 benches/integer_zero_forms.py [--rounds 11] [--runs 200] [--forms where,mul_mask,...]
       [--json OUT.json] [--profile]
       python3 benches/integer_zero_forms.py --fixture resnet --harden-output H.onnx [--harden-after A.onnx] [--json OUT.json]
"""

import argparse
import collections
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from precision_emissions import (  # noqa: E402
    ALL, CALIB_SAMPLES, FIXTURES, PRECISION, add_init, calibrate_uint8, channel_bound, copy_model, insert_after,
    optimized_ops, qdq_sites, rewire, run_batches, session, time_variants, variant_iii_float, with_outputs,
)


def node(op, inputs, output, name, **attrs):
    return helper.make_node(op, inputs, [output], name=name, **attrs)


def full_bound(s):
    """The per-channel bound repeated over the activation's spatial dims ([1, C, H, W]): an
    operand of the activation's own shape but the batch, so no per-channel broadcast."""
    return np.ascontiguousarray(np.broadcast_to(channel_bound(s), (1, *s.shape[1:])))


def form_where(g, s, q, bound=channel_bound):
    b = add_init(g, s.tensor + "/bound", bound(s))
    p = s.tensor
    return [node("LessOrEqual", [p, b], p + "/keep", p + "/le"), node("Where", [p + "/keep", p, s.zp_name], p + "/out", p + "/where")]


def form_mul_mask(g, s, q, bound=channel_bound):
    b = add_init(g, s.tensor + "/bound", bound(s))
    p = s.tensor
    return [
        node("LessOrEqual", [p, b], p + "/keep", p + "/le"),
        node("Cast", [p + "/keep"], p + "/mask", p + "/cast", to=TensorProto.UINT8),
        node("Mul", [p, p + "/mask"], p + "/out", p + "/mul"),
    ]


def form_mul_mask_zp(g, s, q):
    """mul_mask for any zero point, in uint8's wrapping arithmetic: zp + (q - zp) * mask."""
    b = add_init(g, s.tensor + "/bound", channel_bound(s))
    p = s.tensor
    return [
        node("LessOrEqual", [p, b], p + "/keep", p + "/le"),
        node("Cast", [p + "/keep"], p + "/mask", p + "/cast", to=TensorProto.UINT8),
        node("Sub", [p, s.zp_name], p + "/centred", p + "/sub"),
        node("Mul", [p + "/centred", p + "/mask"], p + "/kept", p + "/mul"),
        node("Add", [p + "/kept", s.zp_name], p + "/out", p + "/add"),
    ]


def form_arith_full(g, s, q):
    """No comparison: above = Min(Max(q, B) - B, 1), out = q * (1 - above), B as [1, C, H, W]."""
    b = add_init(g, s.tensor + "/bound", full_bound(s))
    one = add_init(g, s.tensor + "/one", np.array(1, np.uint8))
    p = s.tensor
    return [
        node("Max", [p, b], p + "/max", p + "/max"),
        node("Sub", [p + "/max", b], p + "/excess", p + "/sub"),
        node("Min", [p + "/excess", one], p + "/above", p + "/min"),
        node("Sub", [one, p + "/above"], p + "/keep", p + "/not"),
        node("Mul", [p, p + "/keep"], p + "/out", p + "/mul"),
    ]


def form_mul_lt255(g, s, q):
    top = add_init(g, s.tensor + "/top", np.array(255, np.uint8))
    p = s.tensor
    return [
        node("Less", [p, top], p + "/keep", p + "/lt"),
        node("Cast", [p + "/keep"], p + "/mask", p + "/cast", to=TensorProto.UINT8),
        node("Mul", [p, p + "/mask"], p + "/out", p + "/mul"),
    ]


def form_sub_mul(g, s, q):
    b = add_init(g, s.tensor + "/bound", channel_bound(s))
    p = s.tensor
    return [
        node("Greater", [p, b], p + "/above", p + "/gt"),
        node("Cast", [p + "/above"], p + "/mask", p + "/cast", to=TensorProto.UINT8),
        node("Mul", [p, p + "/mask"], p + "/cut", p + "/mul"),
        node("Sub", [p, p + "/cut"], p + "/out", p + "/sub"),
    ]


def lut(s):
    """[C, 256] uint8: T[c, v] = v if v <= B_c else the zero point."""
    v = np.arange(256)[None, :]
    return np.where(v <= s.bq.astype(np.int64)[:, None], v, int(s.zero_point)).astype(np.uint8)


def form_gather_lut(g, s, q):
    p = s.tensor
    c = len(s.bq)
    t = add_init(g, p + "/table", lut(s).reshape(-1))
    off = add_init(g, p + "/offset", (np.arange(c, dtype=np.int32) * 256).reshape(channel_bound(s).shape))
    return [
        node("Cast", [p], p + "/i32", p + "/cast", to=TensorProto.INT32),
        node("Add", [p + "/i32", off], p + "/index", p + "/add"),
        node("Gather", [t, p + "/index"], p + "/out", p + "/gather", axis=0),
    ]


def form_gather_elem(g, s, q, width=None):
    p = s.tensor
    table = lut(s)  # [C, 256]
    w = s.width
    t4 = np.repeat(table[None, :, :, None], w, axis=3) if s.rank == 4 else table[None, :, :]
    t = add_init(g, p + "/table", np.ascontiguousarray(t4))
    return [
        node("Cast", [p], p + "/i32", p + "/cast", to=TensorProto.INT32),
        node("GatherElements", [t, p + "/i32"], p + "/out", p + "/gather", axis=2 if s.rank == 4 else 1),
    ]


def form_qlinear_where(g, s, q):
    b = add_init(g, s.tensor + "/bound", channel_bound(s))
    p = s.tensor
    sc, zp = q.input[1], s.zp_name
    return [
        node("LessOrEqual", [p, b], p + "/keep", p + "/le"),
        helper.make_node("QLinearWhere", [p + "/keep", p, sc, zp, zp, sc, zp, sc, zp], [p + "/out"], name=p + "/qwhere", domain="com.microsoft"),
    ]


def form_qlinear_mul(g, s, q):
    b = add_init(g, s.tensor + "/bound", channel_bound(s))
    one = add_init(g, s.tensor + "/one", np.array(1.0, np.float32))
    zero = add_init(g, s.tensor + "/mask_zp", np.array(0, np.uint8))
    p = s.tensor
    sc, zp = q.input[1], s.zp_name
    return [
        node("LessOrEqual", [p, b], p + "/keep", p + "/le"),
        node("Cast", [p + "/keep"], p + "/mask", p + "/cast", to=TensorProto.UINT8),
        helper.make_node("QLinearMul", [p, sc, zp, p + "/mask", one, zero, sc, zp], [p + "/out"], name=p + "/qmul", domain="com.microsoft"),
    ]


def divisor(s):
    return np.minimum(s.bq.astype(np.int64) + 1, 255).astype(np.uint8).reshape(channel_bound(s).shape)


def form_min_mod(g, s, q):
    d = add_init(g, s.tensor + "/divisor", divisor(s))
    p = s.tensor
    return [node("Min", [p, d], p + "/min", p + "/min"), node("Mod", [p + "/min", d], p + "/out", p + "/mod", fmod=0)]


def form_min(g, s, q, bound=channel_bound):
    b = add_init(g, s.tensor + "/bound", bound(s))
    return [node("Min", [s.tensor, b], s.tensor + "/out", s.tensor + "/min")]


def form_mod_wrap(g, s, q):
    d = add_init(g, s.tensor + "/divisor", divisor(s))
    return [node("Mod", [s.tensor, d], s.tensor + "/out", s.tensor + "/mod", fmod=0)]


def form_eq255_where(g, s, q):
    top = add_init(g, s.tensor + "/top", np.array(255, np.uint8))
    p = s.tensor
    return [node("Equal", [p, top], p + "/sat", p + "/eq"), node("Where", [p + "/sat", s.zp_name, p], p + "/out", p + "/where")]


def form_mod255(g, s, q):
    top = add_init(g, s.tensor + "/top", np.array(255, np.uint8))
    return [node("Mod", [s.tensor, top], s.tensor + "/out", s.tensor + "/mod", fmod=0)]


def form_clip_scalar(g, s, q):
    hi = add_init(g, s.tensor + "/max", np.array(s.bq.max(), np.uint8))
    return [node("Clip", [s.tensor, "", hi], s.tensor + "/out", s.tensor + "/clip")]


FORMS = {
    "where": form_where, "mul_mask": form_mul_mask, "mul_mask_zp": form_mul_mask_zp, "sub_mul": form_sub_mul, "gather_lut": form_gather_lut,
    "gather_elem": form_gather_elem, "qlinear_where": form_qlinear_where, "qlinear_mul": form_qlinear_mul,
    "min_mod": form_min_mod, "float_island": None, "min": form_min, "mod_wrap": form_mod_wrap,
    "eq255_where": form_eq255_where,
    "where_full": lambda g, s, q: form_where(g, s, q, full_bound), "mul_mask_full": lambda g, s, q: form_mul_mask(g, s, q, full_bound),
    "min_full": lambda g, s, q: form_min(g, s, q, full_bound), "arith_full": form_arith_full, "mul_lt255": form_mul_lt255, "mod255": form_mod255, "clip_scalar": form_clip_scalar,
}  # fmt: skip
ZERO_ABOVE = ("arith_full", "where_full", "mul_mask_full", "where", "mul_mask", "mul_mask_zp", "sub_mul", "gather_lut", "gather_elem", "qlinear_where", "qlinear_mul", "min_mod", "float_island")


def at_opset(model, version):
    m = copy_model(model)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = version
    if not any(o.domain == "com.microsoft" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


def emit(model, sites, build):
    """`model` with `build`'s nodes after each site's Q; every other reader of q reads their output."""
    m = copy_model(model)
    g = m.graph
    nodes = {n.name: n for n in g.node}
    for s in sites:
        q = nodes[s.q]
        new = build(g, s, q)
        rewire(g, s.tensor, s.tensor + "/out", {id(n) for n in new})
        insert_after(g, q, new)
    return m


def bounded_outputs(model, sites, calib, batch1):
    names = [s.tensor + "/out" for s in sites]
    m = with_outputs(model, names, TensorProto.UINT8)
    sess = session(m)
    if batch1:
        outs = [sess.run(None, {"input": calib[i : i + 1]}) for i in range(len(calib))]
        return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
    return run_batches(sess, calib)


def check(name, model, sites, calib, reference):
    """Logits and bounded tensors against the where form's at calib (max |diff|, and counts)."""
    batch1 = name == "gather_elem"
    if name == "float_island":
        outs = run_batches(session(model), calib)
        return {"logits_max_abs_diff": float(np.abs(outs[0] - reference[0]).max())}
    try:
        outs = bounded_outputs(model, sites, calib, batch1)
    except Exception as e:  # noqa: BLE001 - a form onnxruntime refuses is a result
        return {"error": str(e).splitlines()[0][:300]}
    diff = [int((a != b).sum()) for a, b in zip(outs[1:], reference[1:])]
    return {"logits_max_abs_diff": float(np.abs(outs[0] - reference[0]).max()), "bounded_elements_differing": sum(diff)}


def exhaustive(name, site):
    """The form alone on every uint8 value in every channel of `site` (a one-site graph: float x ->
    QuantizeLinear -> the form), against Where(q <= B, q, zp): the calibration samples never go
    above a bound, so they cannot tell the forms apart there. Returns the count of differing values."""
    c = len(site.bq)
    values = np.tile(np.arange(256, dtype=np.uint8), (c, 1)).reshape(1, c, 16, 16)
    scale = np.float32(site.scale)
    x = ((values.astype(np.float32) - np.float32(site.zero_point)) * scale).astype(np.float32)
    g = helper.make_graph([], "one_site", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))], [])
    add_init(g, "scale", np.array(scale, np.float32))
    add_init(g, "zp", np.array(site.zero_point, np.uint8))
    q = helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="q")
    g.node.append(q)
    probe = type("Site", (), {"tensor": "q", "zp_name": "zp", "bq": site.bq, "rank": 4, "zero_point": site.zero_point,
                              "scale": site.scale, "width": 16, "shape": x.shape})
    for n in FORMS[name](g, probe, q):
        g.node.append(n)
    g.output.append(helper.make_tensor_value_info("q/out", TensorProto.UINT8, None))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    out = session(m).run(None, {"x": x})[0]
    expected = np.where(values <= site.bq.reshape(1, c, 1, 1), values, site.zero_point)
    return int((out != expected).sum())


def profile(model, x, runs=200):
    """Per op type: total kernel microseconds over `runs` batch-1 runs (onnxruntime's profiler)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for i in range(runs):
        sess.run(None, {"input": x[i % len(x) : i % len(x) + 1]})
    path = sess.end_profiling()
    per_op = collections.Counter()
    for e in json.load(open(path)):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    os.remove(path)
    return {k: v / runs for k, v in per_op.most_common()}


def zero_saturated(model):
    """`model` with Where(Equal(q, 255), zp, q) after every uint8 QuantizeLinear with zero point 0
    that quantizes a Conv/Gemm/MatMul/Add/Relu/Clip output (an absorbed or kept Relu): the
    scalar trick, with no calibration (for evaluate); returns it and the number of sites."""
    m = copy_model(model)
    g = m.graph
    init = {t.name: t for t in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    count = 0
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]:
        zp = init.get(q.input[2])
        writer = prod.get(q.input[0])
        if zp is None or zp.data_type != TensorProto.UINT8 or onnx.numpy_helper.to_array(zp).any():
            continue
        if writer is None or writer.op_type not in ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip"):
            continue
        site = type("Site", (), {"tensor": q.output[0], "zp_name": q.input[2]})
        new = form_eq255_where(g, site, q)
        rewire(g, site.tensor, site.tensor + "/out", {id(n) for n in new})
        insert_after(g, q, new)
        count += 1
    return m, count


def rewrite_harden_output(model, min_opset=14):
    """harden's integer zero form, Where(LessOrEqual(q, B), q, Z) with a uint8/int8 scalar Z, rewritten
    as mul_mask (Z = 0) or mul_mask_zp (Z != 0); every other node kept. The model is set to opset
    14 when older. Returns the model and the number of sites rewritten."""
    m = at_opset(model, max(min_opset, next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))))
    g = m.graph
    init = {t.name: t for t in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    count = 0
    for w in [n for n in g.node if n.op_type == "Where"]:
        le = prod.get(w.input[0])
        z = init.get(w.input[2])
        if le is None or le.op_type != "LessOrEqual" or le.input[0] != w.input[1] or z is None:
            continue
        if z.data_type not in (TensorProto.UINT8, TensorProto.INT8):
            continue
        q, out, stem = w.input[1], w.output[0], w.name
        cast = node("Cast", [w.input[0]], stem + "/mask", stem + "/cast", to=z.data_type)
        if onnx.numpy_helper.to_array(z).any():
            new = [cast, node("Sub", [q, w.input[2]], stem + "/centred", stem + "/sub"),
                   node("Mul", [stem + "/centred", stem + "/mask"], stem + "/kept", stem + "/mul"),
                   node("Add", [stem + "/kept", w.input[2]], out, stem + "/add")]
        else:
            new = [cast, node("Mul", [q, stem + "/mask"], out, stem + "/mul")]
        position = list(g.node).index(w)
        g.node.remove(w)
        for k, n in enumerate(new):
            g.node.insert(position + k, n)
        count += 1
    return m, count


def harden_output_section(args):
    """harden's own output (--harden-output, made from fixtures/precision/<fixture>_qdq.onnx) with
    its Where forms rewritten by rewrite_harden_output: logits on all of test.npy (where values do
    go above the bounds) and calib[:128] against harden's, and the time of both over the original."""
    calib = np.load(os.path.join(FIXTURES, "calib.npy"))[:CALIB_SAMPLES]
    x, y = np.load(os.path.join(FIXTURES, "test.npy")), np.load(os.path.join(FIXTURES, "test_labels.npy"))
    original = onnx.load(os.path.join(PRECISION, args.fixture + "_qdq.onnx"))
    hardened = onnx.load(args.harden_output)
    rewritten, count = rewrite_harden_output(hardened)
    onnx.checker.check_model(rewritten, full_check=True)
    a, b = run_batches(session(hardened), x)[0], run_batches(session(rewritten), x)[0]
    ca, cb = run_batches(session(hardened), calib)[0], run_batches(session(rewritten), calib)[0]
    row = {"sites": count, "test_max_abs_diff": float(np.abs(a - b).max()), "calib_max_abs_diff": float(np.abs(ca - cb).max()),
           "accuracy": [float((a.argmax(1) == y).mean()), float((b.argmax(1) == y).mean())]}
    variants = [("original", original, ALL), ("harden_where", hardened, ALL), ("harden_mul_mask", rewritten, ALL)]
    if args.harden_after:
        after = onnx.load(args.harden_after)
        onnx.checker.check_model(after, full_check=True)
        aa, ac = run_batches(session(after), x)[0], run_batches(session(after), calib)[0]
        row["after"] = {"file": os.path.basename(args.harden_after), "opset": next(o.version for o in after.opset_import if o.domain in ("", "ai.onnx")),
                        "test_max_abs_diff_to_rewrite": float(np.abs(aa - b).max()), "calib_max_abs_diff_to_rewrite": float(np.abs(ac - cb).max())}
        variants.append(("harden_after", after, ALL))
    per = time_variants(variants, calib, args.rounds, args.runs)
    base = np.array(per["original"])
    row["time"] = {k: {"ratio": float(np.median(v) / np.median(base)), "range": [float((np.array(v) / base).min()), float((np.array(v) / base).max())]} for k, v in per.items()}
    print(json.dumps(row, indent=1))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--fixture", default="resnet", help="resnet, mobilenetv3 or alexnet (fixtures/precision/<it>_qdq.onnx)")
    p.add_argument("--profile", action="store_true", help="also give onnxruntime's per-op kernel time")
    p.add_argument("--json")
    p.add_argument("--harden-output", help="only: rewrite this harden output of the fixture (see harden_output_section)")
    p.add_argument("--harden-after", help="with --harden-output: a later build's harden output of the fixture, checked and timed with it")
    args = p.parse_args()
    if args.harden_output:
        row = harden_output_section(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"fixture": args.fixture, "harden_output": os.path.basename(args.harden_output), "rounds": args.rounds, "runs": args.runs, "load": os.getloadavg(), **row}, f, indent=1)
                f.write("\n")
        return
    model13 = onnx.load(os.path.join(PRECISION, args.fixture + "_qdq.onnx"))
    source = onnx.load(os.path.join(FIXTURES, args.fixture + ".onnx"))
    calib = np.load(os.path.join(FIXTURES, "calib.npy"))[:CALIB_SAMPLES]
    sites = qdq_sites(model13, source)
    calibrate_uint8(model13, sites, calib)
    shapes = run_batches(session(with_outputs(model13, [s.tensor for s in sites], TensorProto.UINT8)), calib[:1])[1:]
    for s, a in zip(sites, shapes):
        s.width = a.shape[-1]
        s.shape = a.shape
    model = at_opset(model13, max(14, next(o.version for o in model13.opset_import if o.domain in ("", "ai.onnx"))))
    variants = [("original_as_stored", model13, ALL), ("original", model, ALL)]
    for name in args.forms.split(","):
        m = variant_iii_float(model, sites) if name == "float_island" else emit(model, sites, FORMS[name])
        variants.append((name, m, ALL))
    reference = bounded_outputs(emit(model, sites, form_where), sites, calib, False)
    rows = {}
    for name, m, _ in variants:
        row = {"opt_ops": {k: v for k, v in optimized_ops(m, ALL).items() if k in ("QLinearConv", "QLinearAdd", "QGemm", "Conv", "DequantizeLinear", "QuantizeLinear")}}
        if name in FORMS:
            row.update(check(name, m, sites, calib, reference))
            if FORMS[name] is not None:
                row["exhaustive_differing"] = {f"{s.kind} zp {int(s.zero_point)}": exhaustive(name, s) for s in
                                               {(s.kind, int(s.zero_point)): s for s in sites}.values()}
        rows[name] = row
        print(name, row, flush=True)
    per_round = time_variants([v for v in variants if "error" not in rows[v[0]]], calib, args.rounds, args.runs)
    base = np.array(per_round["original"])
    print("\n| form | zero above per-channel B | equal to where at calib | differs from where, all 256 values (site kind) | QLinearConv | time vs original (rounds' range) | median ms |")
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in variants:
        row = rows[name]
        if name in per_round:
            t = np.array(per_round[name])
            row.update(ratio=float(np.median(t) / np.median(base)), range=[float((t / base).min()), float((t / base).max())], median_ms=1e3 * float(np.median(t)))
        eq = "-" if name not in FORMS else ("error" if "error" in row else ("yes" if row.get("bounded_elements_differing", 0) == 0 and row["logits_max_abs_diff"] == 0 else f"no ({row.get('bounded_elements_differing')} elements, logits {row['logits_max_abs_diff']:.3g})"))
        ratio = f"{row['ratio']:.2f}x ({row['range'][0]:.2f}-{row['range'][1]:.2f})" if "ratio" in row else row.get("error", "")
        print(f"| {name} | {'yes' if name in ZERO_ABOVE else 'no'} | {eq} | {row.get('exhaustive_differing', '-')} | {row['opt_ops'].get('QLinearConv', 0)} | {ratio} | {row.get('median_ms', float('nan')):.3f} |")
    if args.profile:
        for name, m, _ in variants:
            if "error" not in rows[name]:
                rows[name]["profile_us"] = profile(m, calib)
                print(name, {k: round(v, 1) for k, v in rows[name]["profile_us"].items()})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fixture": args.fixture, "sites": len(sites), "zero_points": sorted({int(s.zero_point) for s in sites}), "rounds": args.rounds, "runs": args.runs, "load": os.getloadavg(), "forms": rows}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
