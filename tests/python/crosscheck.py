"""Cross-runtime checks of hardened models, run by the Rust end-to-end tests.

    python3 crosscheck.py ORIGINAL HARDENED DATA.npy [--rtol R] [--atol A]

Checks that HARDENED passes onnx.checker.check_model(full_check=True), has no Relu left,
and that onnxruntime gives the same outputs for ORIGINAL and HARDENED on DATA (bounds are
calibrated maxima, so nothing is cut). Prints one JSON line with what it measured; exits 1
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


def run(path, data):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = fixed or 256
    outs = []
    for i in range(0, len(data), step):
        batch = data[i : i + step]
        if fixed and len(batch) < fixed:
            break
        outs.append(sess.run(None, {inp.name: batch})[0])
    return np.concatenate(outs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("original")
    ap.add_argument("hardened")
    ap.add_argument("data")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args()

    try:
        onnx.checker.check_model(args.hardened, full_check=True)
    except Exception as e:  # the checker raises several types
        fail(f"onnx checker: {str(e).splitlines()[0]}")
    model = onnx.load(args.hardened)
    relus = sum(1 for op in ops(model.graph) if op == "Relu")
    if relus:
        fail(f"{relus} Relu node(s) left in {args.hardened}")

    data = np.load(args.data).astype(np.float32)
    want = run(args.original, data)
    got = run(args.hardened, data)
    if want.shape != got.shape:
        fail(f"output shape {got.shape} differs from the original's {want.shape}")
    diff = float(np.max(np.abs(want - got))) if want.size else 0.0
    if not np.allclose(want, got, rtol=args.rtol, atol=args.atol):
        fail(f"onnxruntime outputs differ from the original's by up to {diff}")
    agree = float(np.mean(want.argmax(-1) == got.argmax(-1)))
    print(json.dumps({"checker": "ok", "relus_left": 0, "max_abs_diff": diff, "top1_agreement": agree, "samples": int(len(want))}))


if __name__ == "__main__":
    main()
