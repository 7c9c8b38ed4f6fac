"""Checks a hardened model of the exporter corpus in onnxruntime, fed as `fitact-onnx` feeds it.

    python3 corpus_check.py ORIGINAL DATA [--unbounded-allowed K] --hardened MODEL REPORT.json [--hardened ...]

DATA is a .npy (the model's only input) or a .npz (one array per input name); each array is
fed by the README's rule: (N, *rest) with rest one axis shorter than the input is N samples
batched along axis 0 (run in batches of the input's fixed batch, or of 8 where it is free);
(N, *input_shape) is N whole feeds, and then every input runs one sample at a time.
Checks, for each hardened MODEL and its harden REPORT, that
- MODEL passes onnx.checker.check_model(full_check=True) (external data included);
- at most K Relus (in every graph) are left without a bound (crosscheck.unbounded_relus);
- onnxruntime gives the original's outputs (every output) on every feed, to 1e-5 relative;
- every activation of REPORT has the calibrated maximum (and minimum,
  where the report gives one) that onnxruntime computes on the same feeds, to 1e-4 relative:
  main-graph activations become extra graph outputs; one inside a branch of a main-graph If
  leaves through its If (NaN from the branch not taken); deeper ones are counted as unchecked.
  An activation the report gives no maximum must never have run.
Prints one JSON line per model that passes, one line "corpus_check failed: MODEL: reason" on
stderr per model that fails, and exits 1 if any failed.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from crosscheck import session, unbounded_relus


class Failed(Exception):
    pass


def fail(msg):
    raise Failed(msg)


def declared(model):
    """{input name: (numpy dtype, declared rank, fixed first dim or None)} of the real inputs."""
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        dims = t.shape.dim
        first = dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
        out[i.name] = (helper.tensor_dtype_to_np_dtype(t.elem_type), len(dims), first)
    return out


def feeds(model, path):
    """Per run: {input: array}, by the tool's rule (see the module comment)."""
    inputs = declared(model)
    loaded = np.load(path)
    data = {next(iter(inputs)): loaded} if isinstance(loaded, np.ndarray) else dict(loaded)
    arrays = {name: np.asarray(data[name]).astype(dtype) for name, (dtype, _, _) in inputs.items()}
    whole = {name: arrays[name].ndim - 1 == rank for name, (_, rank, _) in inputs.items()}
    count = len(next(iter(arrays.values())))
    if any(whole.values()):
        return [{n: np.asarray(a[s]) if whole[n] else a[s : s + 1] for n, a in arrays.items()} for s in range(count)]
    step = min([first for _, _, first in inputs.values() if first] or [8])
    return [{n: a[s : s + step] for n, a in arrays.items()} for s in range(0, count, step)]


def probe(model, acts):
    """The model with every activation output of `acts` readable as a graph output; the list
    of (activation, graph output) pairs, and the activations it cannot reach."""
    g = model.graph
    pairs, unreachable = [], []
    for a in acts:
        if a["graph"] == "main":
            g.output.append(onnx.ValueInfoProto(name=a["output"]))
            pairs.append((a, a["output"]))
    for node in [n for n in g.node if n.op_type == "If"]:
        branches = {attr.name: attr.g for attr in node.attribute if attr.type == onnx.AttributeProto.GRAPH}
        inside = [a for a in acts if a["graph"] in {f"main/{node.name}.{b}" for b in branches}]
        for k, a in enumerate(inside):
            out = f"{node.name}/probe_{k}"
            for name, branch in branches.items():
                src = f"{out}/{name}"
                if a["graph"] == f"main/{node.name}.{name}":
                    branch.node.append(helper.make_node("Identity", [a["output"]], [src]))
                else:
                    nan = helper.make_tensor(src + "/nan", onnx.TensorProto.FLOAT, [], [np.nan])
                    branch.node.append(helper.make_node("Constant", [], [src], value=nan))
                branch.output.append(helper.make_tensor_value_info(src, onnx.TensorProto.FLOAT, None))
            node.output.append(out)
            g.output.append(onnx.ValueInfoProto(name=out))
            pairs.append((a, out))
    reached = {id(a) for a, _ in pairs}
    unreachable = [a for a in acts if id(a) not in reached]
    return pairs, unreachable


def check_calibration(original, runs, report):
    acts = report["activations"]
    model = onnx.load(original)
    pairs, unchecked = probe(model, acts)
    sess = session(model.SerializeToString())
    names = [out for _, out in pairs]
    high = [None] * len(pairs)
    low = [None] * len(pairs)
    for run in runs:
        for k, value in enumerate(sess.run(names, run)):
            if value.ndim == 0 and np.isnan(value):
                continue  # its branch was not taken
            hi, lo = float(value.max()), float(value.min())
            high[k] = hi if high[k] is None else max(high[k], hi)
            low[k] = lo if low[k] is None else min(low[k], lo)
    for (a, _), hi, lo in zip(pairs, high, low):
        if a.get("calibrated_max") is None:
            if hi is not None:
                fail(f"{a['node']} ({a['graph']}): the report has no calibrated maximum, but it ran (max {hi})")
            continue
        if hi is None:
            fail(f"{a['node']} ({a['graph']}): never ran in onnxruntime, the report says max {a['calibrated_max']}")
        wants = [("calibrated_max", hi)] + ([("calibrated_min", lo)] if a.get("calibrated_min") is not None else [])
        for key, want in wants:
            got = a[key]
            if not np.isclose(got, want, rtol=1e-4, atol=1e-6):
                fail(f"{a['node']} ({a['graph']}): {key} {got} in the report, {want} in onnxruntime")
    return len(pairs), len(unchecked)


def check(original, runs, hardened_path, report_path, allowed):
    """Every check on one hardened model; what it measured."""
    try:
        onnx.checker.check_model(hardened_path, full_check=True)
    except Exception as e:  # the checker raises several types
        fail(f"onnx checker: {str(e).splitlines()[0]}")
    hardened = onnx.load(hardened_path)
    relus = unbounded_relus(hardened.graph)
    if len(relus) > allowed:
        fail(f"{len(relus)} Relu node(s) left without a bound (at most {allowed} allowed): {relus[:5]}")
    want_session, got_session = session(original), session(hardened_path)
    worst = 0.0
    for run in runs:
        for w, g in zip(want_session.run(None, run), got_session.run(None, run)):
            if w.shape != g.shape:
                fail(f"output shapes differ: {w.shape} vs {g.shape}")
            diff = float(np.max(np.abs(w.astype(np.float64) - g.astype(np.float64)), initial=0.0))
            worst = max(worst, diff / max(1.0, float(np.max(np.abs(w), initial=0.0))))
    if worst > 1e-5:
        fail(f"onnxruntime outputs differ from the original's by {worst:.3g} (relative)")
    checked, unchecked = check_calibration(original, runs, json.load(open(report_path)))
    return {"runs": len(runs), "max_relative_difference": worst, "unbounded_relus": len(relus),
            "calibration_checked": checked, "calibration_unchecked": unchecked}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("original")
    ap.add_argument("data")
    ap.add_argument("--unbounded-allowed", type=int, default=0)
    ap.add_argument("--hardened", nargs=2, action="append", metavar=("MODEL", "REPORT"), required=True)
    args = ap.parse_args()
    runs = feeds(onnx.load(args.original), args.data)
    failed = False
    for model, report in args.hardened:
        try:
            measured = check(args.original, runs, model, report, args.unbounded_allowed)
            print(json.dumps({"hardened": os.path.basename(model), **measured}))
        except Failed as e:
            print(f"corpus_check failed: {os.path.basename(model)}: {e}", file=sys.stderr)
            failed = True
        except Exception as e:  # onnxruntime refusing to load or run the model
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(f"corpus_check failed: {os.path.basename(model)}: {type(e).__name__}: {first}", file=sys.stderr)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
