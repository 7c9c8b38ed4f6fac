"""Checks a hardened model fed from a .npz, as `fitact-onnx` feeds it, in onnxruntime.

    python3 npz_outputs.py ORIGINAL HARDENED DATA.npz [BATCH]

The feeding convention is the tool's (README, "Data"): an array (N, *rest) whose rest has one
axis fewer than its input is N samples batched along axis 0 (run in one batch here, or in
batches of BATCH: a model whose outputs depend on the batch, as DynamicQuantizeLinear's do, is
compared at the batch size it was calibrated at); one whose
rest has the input's rank is N whole feeds, and the model runs one sample at a time. Checks
that HARDENED passes onnx.checker.check_model(full_check=True), holds no Relu, and gives the
original's outputs on every feed (bounds are calibrated maxima, so nothing is cut). Prints
one JSON line; exits 1 with a one-line reason on a failed check.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def fail(msg):
    print(f"npz_outputs failed: {msg}", file=sys.stderr)
    sys.exit(1)


def relus(graph):
    """Relus (in every graph) whose output something other than a bound's nodes reads."""
    readers = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}

    def bound_op(n):
        # The scaled threshold's Mul is its bound's first node when only ThresholdedRelu reads it.
        after = readers.get(n.output[0], [])
        return n.op_type in {"LessOrEqual", "Less", "Where", "Min"} or (
            n.op_type == "Mul" and after and all(r.op_type == "ThresholdedRelu" for r in after))

    count = sum(n.op_type == "Relu" and (not readers.get(n.output[0]) or n.output[0] in outputs
                                        or not all(bound_op(r) for r in readers[n.output[0]]))
                for n in graph.node)
    for n in graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                count += relus(a.g)
    return count


def feeds(session, data, batch):
    """Per run: {input: array}."""
    inputs = session.get_inputs()
    whole = any(data[i.name].ndim - 1 == len(i.shape) for i in inputs)
    count = data[inputs[0].name].shape[0]
    if not whole:
        step = batch or count
        return [{i.name: data[i.name][s : s + step] for i in inputs} for s in range(0, count, step)]
    runs = []
    for s in range(count):
        run = {}
        for i in inputs:
            a = data[i.name]
            run[i.name] = np.asarray(a[s]) if a.ndim - 1 == len(i.shape) else a[s : s + 1]
        runs.append(run)
    return runs


original_path, hardened_path, data_path = sys.argv[1:4]
batch = int(sys.argv[4]) if len(sys.argv) > 4 else None
hardened = onnx.load(hardened_path)
onnx.checker.check_model(hardened, full_check=True)
if relus(hardened.graph):
    fail(f"{relus(hardened.graph)} Relu left in {hardened_path}")
data = dict(np.load(data_path))
options = ort.SessionOptions()
options.intra_op_num_threads = 1
want_session = ort.InferenceSession(original_path, options, providers=["CPUExecutionProvider"])
got_session = ort.InferenceSession(hardened_path, options, providers=["CPUExecutionProvider"])
worst = 0.0
runs = feeds(want_session, data, batch)
for run in runs:
    for w, g in zip(want_session.run(None, run), got_session.run(None, run)):
        if w.shape != g.shape:
            fail(f"output shapes differ: {w.shape} vs {g.shape}")
        diff = float(np.max(np.abs(w.astype(np.float64) - g.astype(np.float64)), initial=0.0))
        worst = max(worst, diff / max(1.0, float(np.max(np.abs(w), initial=0.0))))
if worst > 1e-5:
    fail(f"outputs differ by {worst:.3g} (relative)")
print(json.dumps({"runs": len(runs), "max_relative_difference": worst}))
