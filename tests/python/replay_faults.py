"""Replays a `fitact-onnx evaluate --dump-faults` file in onnxruntime: for every model and
trial it writes the faulty values into the model's tensors (initializers or Constant nodes,
by name and flat index), runs the data, and compares the predictions with the tool's.

    python3 replay_faults.py DUMP.json DATA.npy

Prints one JSON line: trials replayed, flips applied, and per model the share of samples
whose prediction agreed (NaN/Inf outputs count as the prediction `null`).
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper as nh

dump = json.load(open(sys.argv[1]))
data = np.load(sys.argv[2]).astype(np.float32)
models = {}
agreement = {}
flips = 0
for entry in dump:
    if entry["model"] not in models:
        models[entry["model"]] = onnx.load(entry["model"])
    model = onnx.ModelProto()
    model.CopyFrom(models[entry["model"]])
    tensors = {t.name: t for t in model.graph.initializer}
    tensors.update({n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"})
    arrays = {}
    for name, element, _bit, value in entry["flips"]:
        array = arrays.setdefault(name, nh.to_array(tensors[name]).copy())
        array.reshape(-1)[element] = np.float32(value)
        flips += 1
    for name, array in arrays.items():
        tensors[name].CopyFrom(nh.from_array(array, name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {name: data[i : i + 256]})[0] for i in range(0, len(data), 256)])
    finite = np.isfinite(out).all(axis=1)
    predicted = [int(c) if ok else None for c, ok in zip(out.argmax(axis=1), finite)]
    same = np.mean([a == b for a, b in zip(predicted, entry["predictions"])])
    agreement.setdefault(entry["model"], []).append(float(same))
print(json.dumps({"trials": len(dump), "flips": flips, "agreement": {m: min(v) for m, v in agreement.items()}}))
