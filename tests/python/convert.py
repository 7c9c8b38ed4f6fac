"""Makes the older and newer variants of a fixture that the end-to-end tests harden:

    python3 convert.py IN.onnx OUT.onnx --opset K [--ir3]

--opset relabels the default-domain opset import (onnx's version converter cannot take Relu
below 14); the full onnx check then proves every op of the fixture is valid at that opset. --ir3 also sets IR version 3, where every
initializer must be listed as a graph input too (what old exporters wrote).
"""
import argparse

import onnx

ap = argparse.ArgumentParser()
ap.add_argument("src")
ap.add_argument("dst")
ap.add_argument("--opset", type=int, required=True)
ap.add_argument("--ir3", action="store_true")
args = ap.parse_args()

model = onnx.load(args.src)
for entry in model.opset_import:
    if entry.domain in ("", "ai.onnx"):
        entry.version = args.opset
if args.opset < 10:
    # MaxPool's ceil_mode and dilations appeared in opset 10; dropping them at their defaults
    # (0; all 1) keeps the meaning.
    def default(a):
        return (a.name == "ceil_mode" and a.i == 0) or (a.name == "dilations" and all(d == 1 for d in a.ints))

    for node in model.graph.node:
        if node.op_type == "MaxPool":
            keep = [a for a in node.attribute if not default(a)]
            del node.attribute[:]
            node.attribute.extend(keep)
if args.ir3:
    model.ir_version = 3
    listed = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        if t.name not in listed:
            model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
onnx.checker.check_model(model, full_check=True)
onnx.save(model, args.dst)
