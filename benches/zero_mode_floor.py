#!/usr/bin/env python3
"""What the cheapest conceivable bound costs in onnxruntime: the floor under every emission.

The overhead issue asks for a zero-mode bound (x for 0 < x <= b, 0 otherwise, NaN and +Inf
included) at <= 5% over the original ResNet-50 in onnxruntime. onnxruntime fuses a Relu, Clip,
Sigmoid, Tanh, HardSigmoid or LeakyRelu into the convolution before it; all are monotone, and
a zero-above-bound function is not, so a zero-mode bound is at least one operation more per
site. This script times, on the same graph and in one interleaved run, rewrites of every Relu
that each add the least work a form of that kind can add (their values are not bounds: the
constants are chosen so that each graph computes the original function on clean data):

  original       Relu (fused into the Conv, or into the Conv's residual Add)
  clip           Clip(0, c) with scalar c: the saturate form onnxruntime fuses (Ranger, or a
                 folded per-channel saturate bound)
  relu+relu      Relu then a second Relu: one extra unary pass that stays in onnxruntime's
                 blocked channel layout (NCHWc): the floor for any form with one more operation
  relu+thresh    Relu then ThresholdedRelu(alpha = -3e38): one extra unary operation outside
                 the blocked layout (a layout conversion pair around it), the shape of today's
                 folded zero-mode form (Clip(max 0) + ThresholdedRelu)
  mask           the same shape with a bound: c = Clip(x, 0, 1 + 2 ulp) fused into the Conv (a
                 Relu after a residual Add keeps its fused Relu), m = Clip(1x1 depthwise
                 Conv(c; -2^24, 2^24 + 2), 0, 1), Y = Mul(c, m): x for 0 < x <= 1, 0 above and
                 for +-Inf, NaN passes; here the graph is not rescaled, so on real data it zeroes
                 every value above 1 (its time, not its outputs, is what counts)
  thresh-after   one ThresholdedRelu after every operator of --ops (default Relu; with
                 Relu,HardSwish,HardSigmoid every activation of MobileNetV3): the floor for a
                 model whose activations are not all Relus
  relu+le+where  Relu then LessOrEqual + Where: the comparison form a bound with a tensor (per
                 channel) needs where it cannot be folded (a Relu after a residual Add)
  relu+mul+thresh+mul  Relu; N = Mul(R, -1/b) per channel; T = ThresholdedRelu(N, -next_up(1));
                 Y = Mul(T, -b): an exact per-channel zero-mode bound from one comparison that
                 onnxruntime runs fast, where the bound cannot be folded into weights
  relu+dw+mul    Relu; m = Clip(1x1 depthwise Conv(r), 0, 1); Mul(r, m): two extra operations,
                 both in the blocked layout (the cheapest zero-like form built only from
                 operations onnxruntime keeps in NCHWc; it is not a bound: Inf * 0 gives NaN)

Usage: python3 benches/zero_mode_floor.py [--graphs target/imagenet-graphs]
       [--models resnet50.opset17,...] [--reps 7] [--min-time 0.3] [--batch 1]
Prints a Markdown table of the overhead of each rewrite (median of interleaved repetitions,
1 intra-op thread) and the node counts of onnxruntime's optimised graph.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fresh(graph, stem):
    taken = {v for n in graph.node for v in list(n.input) + list(n.output)}
    taken |= {i.name for i in graph.initializer}
    name, k = stem, 0
    while name in taken:
        k += 1
        name = f"{stem}.{k}"
    return name


def channels_of(model):
    """Output channel count of every Conv output, to size the depthwise rewrite."""
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "Conv" and n.input[1] in inits:
            out[n.output[0]] = inits[n.input[1]].dims[0]
    return out


def rewrite(model, variant, ops=("Relu",)):
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    conv_channels = channels_of(model)
    producer = {o: n for n in g.node for o in n.output}
    nodes, inits = [], []
    for n in g.node:
        if variant == "thresh-after" and n.op_type in ops:
            # Any activation: its node writes R, one ThresholdedRelu writes Y.
            r = fresh(g, n.output[0] + "/r")
            y = n.output[0]
            n.output[0] = r
            nodes.append(n)
            nodes.append(helper.make_node("ThresholdedRelu", [r], [y], name=y + "/thresh", alpha=-3e38))
            continue
        if n.op_type != "Relu" or variant == "original":
            nodes.append(n)
            continue
        x, y = n.input[0], n.output[0]
        if variant == "clip":
            lo, hi = fresh(g, y + "/lo"), fresh(g, y + "/hi")
            inits += [numpy_helper.from_array(np.float32(0), lo), numpy_helper.from_array(np.float32(3e38), hi)]
            nodes.append(helper.make_node("Clip", [x, lo, hi], [y], name=y + "/clip"))
            continue
        r = fresh(g, y + "/r")
        nodes.append(helper.make_node("Relu", [x], [r], name=r))
        if variant == "relu+relu":
            nodes.append(helper.make_node("Relu", [r], [y], name=y + "/relu2"))
        elif variant == "relu+le+where":
            big, zero, keep = fresh(g, y + "/big"), fresh(g, y + "/zero"), fresh(g, y + "/keep")
            inits += [numpy_helper.from_array(np.float32(3e38), big), numpy_helper.from_array(np.float32(0), zero)]
            nodes.append(helper.make_node("LessOrEqual", [r, big], [keep], name=keep))
            nodes.append(helper.make_node("Where", [keep, r, zero], [y], name=y + "/where"))
        elif variant == "relu+mul+thresh+mul":
            c = conv_channels.get(x)
            src = producer.get(x)
            if c is None and src is not None and src.op_type == "Add":
                c = next((conv_channels[i] for i in src.input if i in conv_channels), None)
            inv, back = fresh(g, y + "/inv"), fresh(g, y + "/back")
            inits += [numpy_helper.from_array(np.full((c, 1, 1), -1.0 / 3e38, np.float32), inv),
                      numpy_helper.from_array(np.full((c, 1, 1), -3e38, np.float32), back)]
            n_, t_ = fresh(g, y + "/n"), fresh(g, y + "/t")
            nodes.append(helper.make_node("Mul", [r, inv], [n_], name=n_))
            nodes.append(helper.make_node("ThresholdedRelu", [n_], [t_], name=t_, alpha=-1.0000001))
            nodes.append(helper.make_node("Mul", [t_, back], [y], name=y + "/mulback"))
        elif variant == "relu+thresh":
            nodes.append(helper.make_node("ThresholdedRelu", [r], [y], name=y + "/thresh", alpha=-3e38))
        elif variant in ("relu+dw+mul", "mask"):
            src = producer.get(x)
            c = conv_channels.get(x)
            if c is None and src is not None and src.op_type == "Add":
                c = next((conv_channels[i] for i in src.input if i in conv_channels), None)
            if c is None:
                nodes[-1].output[0] = y
                continue
            w, b, lo, hi = (fresh(g, y + s) for s in ("/dw_w", "/dw_b", "/m_lo", "/m_hi"))
            scale, shift = (-1e-30, 1.0) if variant == "relu+dw+mul" else (-(2.0**24), 2.0**24 + 2.0)
            if variant == "mask" and src is not None and src.op_type == "Conv":
                # c = Clip(x, 0, next_up(next_up(1))): fused into the Conv; the mask reads it
                top = fresh(g, y + "/c_hi")
                inits.append(numpy_helper.from_array(np.float32(1 + 2 * np.finfo(np.float32).eps), top))
                nodes[-1] = helper.make_node("Clip", [x, lo, top], [r], name=r)
            inits += [
                numpy_helper.from_array(np.full((c, 1, 1, 1), scale, np.float32), w),
                numpy_helper.from_array(np.full(c, shift, np.float32), b),
                numpy_helper.from_array(np.float32(0), lo),
                numpy_helper.from_array(np.float32(1), hi),
            ]
            d, m = fresh(g, y + "/dw"), fresh(g, y + "/m")
            nodes.append(helper.make_node("Conv", [r, w, b], [d], name=d, group=c, kernel_shape=[1, 1]))
            nodes.append(helper.make_node("Clip", [d, lo, hi], [m], name=m))
            nodes.append(helper.make_node("Mul", [r, m], [y], name=y + "/mul"))
        else:
            raise SystemExit(f"unknown variant {variant}")
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    return model


def session(path, optimized=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if optimized:
        so.optimized_model_filepath = optimized
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graphs", default=os.path.join(ROOT, "target", "imagenet-graphs"))
    ap.add_argument("--models", default="resnet50.opset17")
    ap.add_argument("--variants", default="original,clip,relu+relu,relu+thresh,relu+dw+mul")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--ops", default="Relu", help="operators `thresh-after` bounds (e.g. Relu,HardSwish,HardSigmoid)")
    args = ap.parse_args()
    variants = args.variants.split(",")
    calib = np.load(os.path.join(args.graphs, "calib.npy"), mmap_mode="r")
    print(f"onnxruntime {ort.__version__}, batch {args.batch}, 1 thread, {args.reps} interleaved repetitions\n")
    print("| model | variant | ms (median) | overhead | onnxruntime's optimised graph |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        model = onnx.load(os.path.join(args.graphs, name + ".onnx"))
        feed_name = model.graph.input[0].name
        x = np.ascontiguousarray(calib[: args.batch])
        tmp = tempfile.mkdtemp(prefix="floor-")
        sessions, counts, reference = {}, {}, None
        for v in variants:
            path = os.path.join(tmp, f"{v}.onnx")
            onnx.save(rewrite(model, v, args.ops.split(",")), path)
            opt = os.path.join(tmp, f"{v}.opt.onnx")
            s = session(path, opt)
            counts[v] = Counter(n.op_type for n in onnx.load(opt, load_external_data=False).graph.node)
            out = s.run(None, {feed_name: x})[0]
            if reference is None:
                reference = out
            elif not np.allclose(out, reference, rtol=1e-4, atol=1e-4):
                print(f"warning: {name} {v}: outputs differ from the original by {np.abs(out - reference).max()}", file=sys.stderr)
            sessions[v] = s
        iters = {}
        for v, s in sessions.items():
            t0, k = time.perf_counter(), 0
            while time.perf_counter() - t0 < args.min_time:
                s.run(None, {feed_name: x})
                k += 1
            iters[v] = max(k, 3)
        times = {v: [] for v in variants}
        for rep in range(args.reps):
            order = variants[rep % len(variants):] + variants[: rep % len(variants)]
            for v in order:
                s = sessions[v]
                t0 = time.perf_counter()
                for _ in range(iters[v]):
                    s.run(None, {feed_name: x})
                times[v].append((time.perf_counter() - t0) / iters[v] * 1e3)
        base = statistics.median(times["original"]) if "original" in times else None
        for v in variants:
            med = statistics.median(times[v])
            over = f"{(med / base - 1) * 100:+.1f}%" if base else ""
            shown = ", ".join(f"{op} {c}" for op, c in sorted(counts[v].items()) if op not in ("Flatten", "Gemm", "GlobalAveragePool", "MaxPool"))
            print(f"| {name} | {v} | {med:.2f} | {over} | {shown} |")


if __name__ == "__main__":
    main()
