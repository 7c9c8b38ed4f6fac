"""Checks that harden's uint8 mask form gives the values of its Where form, in onnxruntime.

usage: mask_matches_where.py HARDENED WHERE_OUT.onnx SAMPLES.npy [SAMPLES.npy ...]

Every bound harden wrote as `Mul(q, Cast(LessOrEqual(q, B), uint8))` (zero point 0) or
`Add(Mul(Sub(q, Z), mask), Z)` is rewritten as `Where(LessOrEqual(q, B), q, Z)`, the form
before opset 14; both models run on the first 64 rows of each samples file and their outputs
must be equal. The Where form is written to WHERE_OUT (for a run in another engine). The values cut (above a bound) are counted, so a check where no value was
cut is visible. Prints one JSON line of what it saw.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def producers(graph):
    return {o: n for n in graph.node for o in n.output}


def as_where(model):
    """The model with each mask form replaced by Where, and the LessOrEqual outputs ("keep")."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    made = producers(g)
    keeps, drop, wheres = [], set(), {}
    for n in g.node:
        if n.op_type != "Mul" or not n.name.endswith("/fitact/mul"):
            continue
        stem = n.name[: -len("/mul")]
        cast = made[n.input[1]]
        keep = cast.input[0]
        raw = made[keep].input[0]
        add = next((a for a in g.node if a.name == stem + "/add"), None)
        if add is None:
            zero = stem + "/zero_for_where"
            g.initializer.append(numpy_helper.from_array(np.zeros((), np.uint8), zero))
            out = n.output[0]
        else:
            zero, out = add.input[1], add.output[0]
            drop.update({add.name, stem + "/sub"})
        drop.update({n.name, cast.name})
        wheres[n.name] = helper.make_node("Where", [keep, raw, zero], [out], name=stem + "/where")
        keeps.append(keep)
    nodes = [wheres.get(n.name, n) for n in g.node if n.name not in drop or n.name in wheres]
    del g.node[:]
    g.node.extend(nodes)
    return m, keeps


def with_outputs(model, names):
    """A copy of `model` that also outputs the tensors `names`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return m


def session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main(hardened, where_out, *samples):
    mask = onnx.load(hardened)
    where, keeps = as_where(mask)
    assert keeps, "no mask form in the model"
    onnx.checker.check_model(where, full_check=True)
    onnx.save(where, where_out)
    a, b = session(mask), session(with_outputs(where, keeps))
    feed = a.get_inputs()[0].name
    diff, cut, seen = 0.0, 0, 0
    for path in samples:
        x = np.load(path)[:64].astype(np.float32)
        ya = a.run(None, {feed: x})[0]
        yb, *kept = b.run(None, {feed: x})
        diff = max(diff, float(np.abs(ya - yb).max()))
        cut += sum(int((~k).sum()) for k in kept)
        seen += sum(k.size for k in kept)
    assert diff == 0.0, f"the mask form's outputs differ from Where's by {diff}"
    print(json.dumps({"sites": len(keeps), "max_diff": diff, "values_cut": cut, "values_seen": seen}))


if __name__ == "__main__":
    main(*sys.argv[1:])
