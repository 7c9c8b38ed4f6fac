"""Runs every `caseN.onnx` of a folder in onnxruntime on `caseN.x.npy` and compares with
`caseN.want.npy` bit for bit (0.0 and -0.0 count as equal); each model must also pass the
full onnx check. Used by tests/bounded_semantics.rs. With --close (tests/emission_forms.rs),
within 1e-4 relative + 1e-5 absolute instead (folded weights are rounded once more); with
--ulps N, within N units in the last place (and the same zeros).

    python3 semantics.py DIR [--close | --ulps N]
"""
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

folder = pathlib.Path(sys.argv[1])
close = "--close" in sys.argv[2:]
ulps = int(sys.argv[sys.argv.index("--ulps") + 1]) if "--ulps" in sys.argv else 0
models = sorted(folder.glob("case*.onnx"))
for path in models:
    onnx.checker.check_model(str(path), full_check=True)
    x = np.load(path.with_suffix(".x.npy"))
    want = np.load(path.with_suffix(".want.npy"))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    if close:
        same = np.abs(got - want) <= 1e-5 + 1e-4 * np.abs(want)
    else:
        apart = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
        same = (apart <= ulps) | ((got == 0) & (want == 0))
    if got.shape != want.shape or not same.all():
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        print(f"{path.name} ({ops}, opset {onnx.load(str(path)).opset_import[0].version}):\n x={x.ravel()}\n got={got.ravel()}\n want={want.ravel()}", file=sys.stderr)
        sys.exit(1)
print(f"{len(models)} cases agree")
