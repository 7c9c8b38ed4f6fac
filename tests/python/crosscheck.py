"""Cross-runtime checks of hardened models, run by the Rust end-to-end tests.

    python3 crosscheck.py ORIGINAL HARDENED DATA.npy [--report REPORT.json] [--batch B] [--rtol R] [--atol A]

Checks that HARDENED passes onnx.checker.check_model(full_check=True), has no Relu left
without a bound after it (a Relu stays, with --emission relu-first or fold, only when every
reader of its output is a node of its bound: LessOrEqual, Less, Where, Min, or the Mul of a
scaled threshold, which only ThresholdedRelu reads),
and that onnxruntime gives the same outputs for ORIGINAL and HARDENED on DATA (bounds are
calibrated maxima, so nothing is cut). With --report (the harden report, DATA being the
calibration samples), it also recomputes every bound independently in onnxruntime: the
maximum of each activation's output reduced to the report's granularity, times (1 + margin),
and for two-sided bounds the minimum too, both widened by margin x max(|min|, |max|); and
compares them with the bound tensors in HARDENED (values and shape). --batch (default 256) is the
batch size of every run: models whose control flow depends on the batch (an If on a batch
statistic) must be checked with the batch size they were calibrated with. Prints one JSON line with what it measured; exits 1
with a one-line reason on a failed check.
"""
import argparse
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def fail(msg):
    print(f"crosscheck failed: {msg}", file=sys.stderr)
    sys.exit(1)


def ops(graph):
    for node in graph.node:
        yield node.op_type
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from ops(g)


BOUND_OPS = {"LessOrEqual", "Less", "Where", "Min"}


def unbounded_relus(graph):
    """Names of the Relus (in every graph) whose output something other than a bound reads."""
    found = []
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    outputs = {o.name for o in graph.output}
    reader_nodes = {}
    for node in graph.node:
        for name in node.input:
            reader_nodes.setdefault(name, []).append(node)

    def bound_op(node):
        # The scaled threshold's Mul is its bound's first node when only ThresholdedRelu reads it.
        after = reader_nodes.get(node.output[0], [])
        return node.op_type in BOUND_OPS or (
            node.op_type == "Mul" and after and all(n.op_type == "ThresholdedRelu" for n in after))

    for node in graph.node:
        if node.op_type == "Relu":
            after = reader_nodes.get(node.output[0], [])
            if not after or not all(bound_op(n) for n in after) or node.output[0] in outputs:
                found.append(node.name or node.output[0])
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found += unbounded_relus(g)
    return found


def session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run(path, data, batch):
    sess = session(path)
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = fixed or batch
    outs = []
    for i in range(0, len(data), step):
        batch = data[i : i + step]
        if fixed and len(batch) < fixed:
            break
        outs.append(sess.run(None, {inp.name: batch})[0])
    return np.concatenate(outs)


def expected_bound(neuron, granularity, reduce=np.max):
    """Per-neuron maxima (or minima, with reduce=np.min) [C, ...] of one activation reduced to
    the bound tensor's layout."""
    if granularity == "layer" or neuron.ndim == 0:
        return np.array(reduce(neuron), dtype=np.float32)
    if granularity == "channel":
        per_channel = reduce(neuron.reshape(neuron.shape[0], -1), axis=1)
        return per_channel.reshape((-1,) + (1,) * (neuron.ndim - 1))
    return neuron


def check_bounds(original, hardened, data, report, batch):
    # onnxruntime cannot expose tensors inside subgraphs: check the main graph's bounds.
    acts = [a for a in report["activations"] if a["graph"] == "main"]
    if not acts:
        return
    probe = onnx.load(original)
    known = {o.name for o in probe.graph.output}
    for a in acts:
        if a["output"] not in known:
            probe.graph.output.append(onnx.ValueInfoProto(name=a["output"]))
    sess = session(probe.SerializeToString())
    names = [a["output"] for a in acts]
    inp = sess.get_inputs()[0]
    maxima = minima = None
    for i in range(0, len(data), batch):
        outs = sess.run(names, {inp.name: data[i : i + batch]})
        batch_max = [o.max(axis=0) for o in outs]
        batch_min = [o.min(axis=0) for o in outs]
        maxima = batch_max if maxima is None else [np.maximum(m, b) for m, b in zip(maxima, batch_max)]
        minima = batch_min if minima is None else [np.minimum(m, b) for m, b in zip(minima, batch_min)]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in hardened.graph.initializer}
    inits.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in hardened.graph.node if n.op_type == "Constant"})
    margin = report["margin"]
    # Tensors a Mul scales by: where a scaled threshold stores S instead of its bound.
    scales = {n.input[1] for n in hardened.graph.node if n.op_type == "Mul" and len(n.input) == 2}
    for a, hi, lo in zip(acts, maxima, minima):
        if a.get("folded_into"):
            # The bound is in the rescaled weights (the outputs, checked above, are the original's).
            continue
        high = expected_bound(hi, report["granularity"])
        if a.get("low_initializer"):
            low = expected_bound(lo, report["granularity"], np.min)
            # Logits keep a quarter of their magnitude (ActivationKind::least_margin).
            least = 0.25 if a["kind"] == "Logits" else 0.0
            slack = max(margin, least) * np.maximum(np.abs(low), np.abs(high))
            wants = [(a["bound_initializer"], high + slack), (a["low_initializer"], low - slack)]
        else:
            # One-sided (also for an activation whose bound below was dropped as redundant,
            # under the function's own minimum): the maximum times (1 + margin).
            wants = [(a["bound_initializer"], np.maximum(high, 0) * (1.0 + margin))]
        for name, want in wants:
            got = inits[name]
            if name in scales and name.endswith("/scale"):
                # The scaled threshold stores S, about -1/B (-Inf for a bound of 0).
                with np.errstate(divide="ignore"):
                    got = np.where(np.isinf(got), 0.0, -1.0 / got).astype(np.float32)
            if list(got.shape) != a["bound_shape"] or got.shape != want.shape:
                fail(f"{a['node']}: bound shape {got.shape}, report says {a['bound_shape']}, expected {want.shape}")
            # Before opset 12 bounds are stored one float beyond (strict comparisons).
            close = np.isclose(got, want, rtol=1e-4, atol=1e-5)
            if not close.all():
                fail(f"{a['node']}: {name} differs from onnxruntime's extremes by up to {np.abs(got - want).max()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("original")
    ap.add_argument("hardened")
    ap.add_argument("data")
    ap.add_argument("--report")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args()

    try:
        onnx.checker.check_model(args.hardened, full_check=True)
    except Exception as e:  # the checker raises several types
        fail(f"onnx checker: {str(e).splitlines()[0]}")
    model = onnx.load(args.hardened)
    relus = unbounded_relus(model.graph)
    if relus:
        fail(f"{len(relus)} Relu node(s) left without a bound in {args.hardened}: {relus[:5]}")

    data = np.load(args.data).astype(np.float32)
    want = run(args.original, data, args.batch)
    got = run(args.hardened, data, args.batch)
    if want.shape != got.shape:
        fail(f"output shape {got.shape} differs from the original's {want.shape}")
    diff = float(np.max(np.abs(want - got))) if want.size else 0.0
    if not np.allclose(want, got, rtol=args.rtol, atol=args.atol):
        worst = np.unravel_index(np.argmax(np.abs(want - got)), want.shape)
        fail(f"onnxruntime outputs differ from the original's by up to {diff} at {worst}: {want[worst]} vs {got[worst]}")
    if args.report:
        check_bounds(args.original, model, data, json.load(open(args.report)), args.batch)
    agree = float(np.mean(want.argmax(-1) == got.argmax(-1)))
    print(json.dumps({"checker": "ok", "relus_left": 0, "max_abs_diff": diff, "top1_agreement": agree, "samples": int(len(want))}))


if __name__ == "__main__":
    main()
