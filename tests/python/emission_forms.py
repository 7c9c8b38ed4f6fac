"""Runs every `caseN.onnx` of a folder in onnxruntime on `caseN.x.npy` and compares with
`caseN.want.npy` within 1e-4 relative + 1e-5 absolute (folded weights are rounded once more);
each model must also pass the full onnx check. Used by tests/emission_forms.rs.

    python3 emission_forms.py DIR
"""
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

folder = pathlib.Path(sys.argv[1])
models = sorted(folder.glob("case*.onnx"))
for path in models:
    onnx.checker.check_model(str(path), full_check=True)
    x = np.load(path.with_suffix(".x.npy"))
    want = np.load(path.with_suffix(".want.npy"))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    if got.shape != want.shape or not (np.abs(got - want) <= 1e-5 + 1e-4 * np.abs(want)).all():
        model = onnx.load(str(path))
        ops = [n.op_type for n in model.graph.node]
        print(f"{path.name} ({ops}, opset {model.opset_import[0].version}):\n got={got.ravel()}\n want={want.ravel()}",
              file=sys.stderr)
        sys.exit(1)
print(f"{len(models)} cases agree")
