#!/usr/bin/env python3
"""bfloat16 versions of fixtures/resnet.onnx: what onnxruntime's CPU provider and fitact-onnx
(its onnxruntime and tract engines) can load, run, harden and evaluate (not CI).

Two models, written to --out (default: a temporary folder):

    resnet_bf16.onnx          a bfloat16 body with float32 input/output: the float16 converter's
                              output (onnxconverter_common, keep_io_types=True) with every float16
                              type, Cast and initializer turned into bfloat16 (values rounded to
                              nearest even from float32)
    resnet_bf16_opset22.onnx  the same at opset 22 (where Conv accepts bfloat16 in ONNX)
    resnet_bf16_weights.onnx  only the weights stored as bfloat16: each float32 initializer of a
                              Conv/Gemm becomes a bfloat16 initializer and a Cast to float32 (the
                              compute stays float32)

For each: onnxruntime session and accuracy on test.npy[:N]; then `fitact-onnx inspect`,
`harden` (each engine) and, where harden succeeds, the exact error lines are recorded.

usage: python3 benches/bfloat16_probe.py [--binary target/release/fitact-onnx] [--out DIR] [--json OUT.json]
"""

import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")


def bf16_bits(values):
    """float32 -> bfloat16 bits, rounded to nearest even (NaN kept a NaN)."""
    u = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(values, np.float32))
    rounded[nan] = 0x7FC0
    return rounded


def bf16_tensor(name, values):
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.BFLOAT16
    t.dims.extend(values.shape)
    t.raw_data = bf16_bits(values).tobytes()
    return t


def retype(type_proto):
    if type_proto.HasField("tensor_type") and type_proto.tensor_type.elem_type == TensorProto.FLOAT16:
        type_proto.tensor_type.elem_type = TensorProto.BFLOAT16


def full_bf16(src):
    """The float16 converter's model with bfloat16 in place of float16 everywhere."""
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(src), keep_io_types=True)
    g = model.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT16:
            g.initializer[i].CopyFrom(bf16_tensor(t.name, numpy_helper.to_array(t).astype(np.float32)))
    for v in list(g.input) + list(g.output) + list(g.value_info):
        retype(v.type)
    for n in g.node:
        for a in n.attribute:
            if a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.BFLOAT16
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                a.t.CopyFrom(bf16_tensor(a.t.name, numpy_helper.to_array(a.t).astype(np.float32)))
    return model


def full_bf16_opset22(src):
    """full_bf16 at opset 22, where ONNX's Conv, Gemm, Relu, GlobalAveragePool accept bfloat16
    (at opset 13 only Add, Relu, Gemm do, and Conv does not type-check)."""
    model = full_bf16(src)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 22
    model.ir_version = 10
    return model


def weights_bf16(src):
    """float32 compute; each Conv/Gemm weight and bias stored as bfloat16 behind a Cast."""
    model = onnx.load(src)
    g = model.graph
    init = {t.name: t for t in g.initializer}
    casts = []
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm"):
            continue
        for k, name in enumerate(n.input[1:], 1):
            if name in init and init[name].data_type == TensorProto.FLOAT:
                stored = bf16_tensor(name + "_bf16", numpy_helper.to_array(init[name]))
                g.initializer.remove(init.pop(name))
                g.initializer.append(stored)
                casts.append(helper.make_node("Cast", [stored.name], [name], name=name + "/cast", to=TensorProto.FLOAT))
    for c in reversed(casts):
        g.node.insert(0, c)
    return model


def ort_run(path, x, y):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - the failure is the result
        return {"session": "fails", "error": str(e).strip().splitlines()[0][:400]}
    try:
        logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as e:  # noqa: BLE001
        return {"session": "ok", "run": "fails", "error": str(e).strip().splitlines()[0][:400]}
    return {"session": "ok", "run": "ok", "accuracy": float((logits.argmax(1) == y).mean())}


def cli(binary, *args):
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    err = [line for line in r.stderr.strip().splitlines() if line.strip()]
    return {"command": "fitact-onnx " + " ".join(os.path.relpath(a, ROOT) if os.path.isabs(a) else a for a in args),
            "exit": r.returncode, "stderr_last": err[-3:], "stdout_head": r.stdout.strip().splitlines()[:25]}


def campaign(args, original, hardened, out, name):
    """One paired evaluate of the original and its hardened models (fitact default and ranger),
    the bfloat16 words flipped as stored; returns the report's per-model results."""
    ranger = os.path.join(out, name + ".ranger.onnx")
    subprocess.run([args.binary, "harden", original, ranger, "--calib", os.path.join(FIX, "calib.npy"), "--method", "ranger", "-q"], check=True)
    data, labels = os.path.join(out, "test.npy"), os.path.join(out, "test_labels.npy")
    np.save(data, np.load(os.path.join(FIX, "test.npy"))[: args.samples])
    np.save(labels, np.load(os.path.join(FIX, "test_labels.npy"))[: args.samples])
    report = os.path.join(out, name + ".campaign.json")
    cmd = [args.binary, "evaluate", original, hardened, ranger, "--data", data, "--labels", labels,
           "--ber", "1e-5,1e-4", "--trials", str(args.trials), "--seed", "7", "--report", report, "-q"]
    subprocess.run(cmd, check=True)
    rep = json.load(open(report))
    rows = []
    for r in rep["results"]:
        rows.append({"model": os.path.basename(r["model"]), "ber": r["ber"], "clean": r["clean_accuracy"],
                     "mean": r["accuracy"]["mean"], "ci95": r["accuracy"]["ci95"], "flips_by_dtype": r["mean_flips_by_dtype"]})
        print(rows[-1], flush=True)
    return {"command": "fitact-onnx " + " ".join(os.path.basename(c) for c in cmd[1:]), "weights_by_dtype": [m["weights_by_dtype"] for m in rep["models"]], "results": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fitact-onnx"))
    p.add_argument("--out")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--evaluate", action="store_true", help="also evaluate what hardens (30 paired trials)")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--json")
    args = p.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="bf16.")
    os.makedirs(out, exist_ok=True)
    x = np.load(os.path.join(FIX, "test.npy"))[: args.samples]
    y = np.load(os.path.join(FIX, "test_labels.npy"))[: args.samples]
    calib = os.path.join(FIX, "calib.npy")
    result = {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "models": {}}
    result["float32_accuracy"] = ort_run(os.path.join(FIX, "resnet.onnx"), x, y)
    plan = (("resnet_bf16", full_bf16), ("resnet_bf16_opset22", full_bf16_opset22), ("resnet_bf16_weights", weights_bf16))
    for name, make in plan:
        path = os.path.join(out, name + ".onnx")
        model = make(os.path.join(FIX, "resnet.onnx"))
        onnx.save(model, path)
        r = {"path": os.path.basename(path)}
        try:
            onnx.checker.check_model(model, full_check=True)
            r["onnx_full_check"] = "ok"
        except Exception as e:  # noqa: BLE001
            r["onnx_full_check"] = str(e).strip().splitlines()[0][:300]
        r["onnxruntime"] = ort_run(path, x, y)
        r["inspect"] = cli(args.binary, "inspect", path)
        r["harden"] = {}
        for e in ("onnxruntime", "tract"):
            hardened = os.path.join(out, f"{name}.fitact.{e}.onnx")
            r["harden"][e] = cli(args.binary, "harden", path, hardened, "--calib", calib, "--engine", e)
            if r["harden"][e]["exit"] == 0:
                r["harden"][e]["hardened_onnxruntime"] = ort_run(hardened, x, y)
                if e == "onnxruntime" and args.evaluate:
                    r["evaluate"] = campaign(args, path, hardened, out, name)
        result["models"][name] = r
        print(json.dumps({name: r}, indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
