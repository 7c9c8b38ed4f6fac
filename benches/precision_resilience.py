#!/usr/bin/env python3
"""Resilience and cost of every hardening method on the int8 and float16 fixtures (not CI).

For each fixture of fixtures/precision/ (make_precision_fixtures.py) it hardens with

    fitact            fitact-onnx harden M.onnx (channel, zero)
    fitact_saturate   ... --mode saturate (channel, saturate)
    clipact           ... --method clipact (layer, zero)
    ranger            ... --method ranger (layer, saturate)
    fitact_searched   ... --search at the deployed fault model: the model's own stored words
                      flipped at BER 1e-4 (32 patterns), labels of the calibration samples,
                      budget 2% (the default 0.5% is more than 512 samples can vouch for, so
                      the default search keeps the calibrated bounds)
    fitact_searched_5 the same at budget 5% with 64 patterns (room to move, and more power)
    fitact_tight_5    ... --search --objective tight --budget 5% (the smallest bounds the budget
                      allows: does tightening pay under these faults at all?)
    fitact_logits     ... --activations all,logits (the classifier's scores bounded too)
    fitact_linear     ... --activations all,linear (int8: every conv output no activation follows,
                      bounded on both sides in its integers)
    ranger_by_quant   (int8 only) the float32 source hardened with --method ranger --emission fold,
                      then quantized with make_precision_fixtures.quantize (same settings as the
                      fixture: per channel, uint8 activations, int8 weights, MinMax on calib[:128])
    eq255             (int8 QDQ only) the original with Where(Equal(q, 255), zp, q) after each uint8
                      QuantizeLinear of an absorbed Relu: zero what saturated at the layer's top
                      (benches/integer_zero_forms.py zero_saturated; no calibration of its own)
    ranger_by_quant_eq255  the same on ranger_by_quant
    ranger_channel_by_quant(_eq255)  (--models) as ranger_by_quant with --granularity channel: the
                      per-channel bounds folded into the weights, so that 255 is each channel's own
                      calibrated top (and eq255 a per-channel zero-above at a scalar op's cost)

then runs one `fitact-onnx evaluate` per fixture with the original and every hardened model
together (each tensor's flips are drawn from (seed, trial, BER, tensor name): models that share a
tensor's name get the same flips in it), and times each model over its original in onnxruntime
(1 intra/inter-op thread, batch 1, interleaved rounds, medians: time_variants of
benches/precision_emissions.py).

Per model it reports clean accuracy, accuracy ± 95% CI at each BER, the paired difference to the
original, and the recovered fraction (hardened - original) / (clean - original) at each BER.

usage: python3 benches/precision_resilience.py [--binary target/release/fitact-onnx]
       [--fixtures resnet_qdq,resnet_qop,...] [--models original,fitact,...] [--images 1000]
       [--trials 30] [--ber 1e-5,1e-4] [--seed 7] [--rounds 11] [--runs 200] [--no-timing]
       [--json OUT.json] [--keep DIR [--reuse]]
       python3 benches/precision_resilience.py --pool REPORT,REPORT [--pool-model 1]
--reuse keeps the models and campaign reports already in --keep; --pool pools the trials of
campaigns run with different seeds (model --pool-model against model 0) into one recovered
fraction per BER. Results of 2026-12-05: docs/results/precision_resilience_2026-12-05.md.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantFormat

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "fixtures")
PRECISION = os.path.join(FIX, "precision")
sys.path.insert(0, FIX)
sys.path.insert(0, HERE)
from make_precision_fixtures import CALIB_SAMPLES, quantize  # noqa: E402
from integer_zero_forms import zero_saturated  # noqa: E402
from precision_emissions import ALL, time_variants  # noqa: E402

# fixture -> (float32 source, quantization format or None for float16)
FIXTURES = {
    "resnet_qdq": ("resnet", QuantFormat.QDQ),
    "resnet_qop": ("resnet", QuantFormat.QOperator),
    "mobilenetv3_qdq": ("mobilenetv3", QuantFormat.QDQ),
    "alexnet_qdq": ("alexnet", QuantFormat.QDQ),
    "resnet_fp16": ("resnet", None),
    "mobilenetv3_fp16": ("mobilenetv3", None),
    "resnet_fp16_io": ("resnet", None),
}
REUSE = False  # --reuse: keep the models and campaign reports found in --keep
METHODS = {
    "fitact": [],
    "fitact_saturate": ["--mode", "saturate"],
    "clipact": ["--method", "clipact"],
    "ranger": ["--method", "ranger"],
    "fitact_searched": ["--search", "--labels", "CALIB_LABELS", "--budget", "2%", "--fault-ber", "1e-4",
                        "--fault-patterns", "32"],
    "fitact_searched_5": ["--search", "--labels", "CALIB_LABELS", "--budget", "5%", "--fault-ber", "1e-4",
                          "--fault-patterns", "64"],
    "fitact_tight_5": ["--search", "--labels", "CALIB_LABELS", "--objective", "tight", "--budget", "5%"],
    "fitact_logits": ["--activations", "all,logits"],
    "fitact_linear": ["--activations", "all,linear"],
}


def calib_labels(fixture, tmp):
    """The labels of the calibration file `fixture` takes (its first rows: calib_fp16.npy has 128)."""
    rows = len(np.load(calib_file(fixture), mmap_mode="r"))
    path = os.path.join(tmp, f"calib_labels_{rows}.npy")
    if not os.path.exists(path):
        np.save(path, np.load(os.path.join(FIX, "calib_labels.npy"))[:rows])
    return path


def harden(binary, src, dst, calib, flags):
    if REUSE and os.path.exists(dst):
        return
    subprocess.run([binary, "harden", src, dst, "--calib", calib, "-q", *flags], check=True)


def calib_file(fixture):
    return os.path.join(PRECISION, "calib_fp16.npy") if fixture.endswith("_io") else os.path.join(FIX, "calib.npy")


BY_QUANT = {  # hardened in float32, then quantized like the fixture
    "ranger_by_quant": ["--method", "ranger", "--emission", "fold"],
    "ranger_channel_by_quant": ["--method", "ranger", "--granularity", "channel", "--emission", "fold"],
}


def make_models(binary, fixture, tmp, wanted):
    """{name: path}: the original, its hardened variants, and (int8) the models hardened before quantization."""
    source, fmt = FIXTURES[fixture]
    original = os.path.join(PRECISION, fixture + ".onnx")
    models = {"original": original}
    for name, flags in METHODS.items():
        if name in wanted:
            models[name] = os.path.join(tmp, f"{fixture}.{name}.onnx")
            flags = [calib_labels(fixture, tmp) if f == "CALIB_LABELS" else f for f in flags]
            harden(binary, original, models[name], calib_file(fixture), flags)
    for name, flags in BY_QUANT.items():
        if fmt is None or not {name, name + "_eq255"} & wanted:
            continue
        folded = os.path.join(tmp, f"{source}.{name}.fold.onnx")
        harden(binary, os.path.join(FIX, source + ".onnx"), folded, os.path.join(FIX, "calib.npy"), flags)
        dst = os.path.join(tmp, f"{fixture}.{name}.onnx")
        qtmp = os.path.join(tmp, f"q_{fixture}_{name}")
        os.makedirs(qtmp, exist_ok=True)
        if not (REUSE and os.path.exists(dst)):
            quantize(folded, dst, fmt, np.load(os.path.join(FIX, "calib.npy"))[:CALIB_SAMPLES], qtmp)
        models[name] = dst
    if fmt == QuantFormat.QDQ:
        for name in ["original", *BY_QUANT]:
            trick = ("" if name == "original" else name + "_") + "eq255"
            if trick not in wanted:
                continue
            model, count = zero_saturated(onnx.load(models[name]))
            models[trick] = os.path.join(tmp, f"{fixture}.{trick}.onnx")
            onnx.save(model, models[trick])
            print(f"   {name}: Where(Equal(q, 255), zp, q) at {count} sites", flush=True)
    return {k: v for k, v in models.items() if k in wanted}


def shared_weights(models):
    """Per model: the share of the original's stored words (by initializer name and size) it
    also holds, i.e. whose flips are paired with the original's."""
    def sizes(path):
        return {t.name: int(np.prod(t.dims, dtype=np.int64)) for t in onnx.load(path).graph.initializer}

    base = sizes(models["original"])
    total = sum(base.values())
    out = {}
    for name, path in models.items():
        s = sizes(path)
        out[name] = sum(v for k, v in base.items() if s.get(k) == v) / total
    return out


def evaluate(binary, models, data, labels, args, report):
    cmd = [binary, "evaluate", *models.values(), "--data", data, "--labels", labels,
           "--ber", args.ber, "--trials", str(args.trials), "--seed", str(args.seed), "--report", report, "-q"]
    start = time.time()
    subprocess.run(cmd, check=True)
    return cmd, time.time() - start


def mean_ci(values):
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def summarize(report_path, models):
    """Per model: clean accuracy; per BER: mean ± CI, paired difference to the original ± CI, recovered fraction."""
    rep = json.load(open(report_path))
    names = list(models)
    bers = rep["config"]["bers"]
    acc = {}  # (model index, ber index) -> [accuracy per trial, in trial order]
    for t in sorted(rep["trials"], key=lambda t: (t["model"], t["ber"], t["trial"])):
        acc.setdefault((t["model"], t["ber"]), []).append(t["accuracy"])
    out = {}
    clean0 = rep["models"][0]["clean_accuracy"]
    for m, name in enumerate(names):
        row = {"clean": rep["models"][m]["clean_accuracy"], "weights_by_dtype": rep["models"][m]["weights_by_dtype"], "ber": {}}
        for b, ber in enumerate(bers):
            mean, ci = mean_ci(acc[(m, b)])
            diff, diff_ci = mean_ci(np.array(acc[(m, b)]) - np.array(acc[(0, b)]))
            lost = clean0 - float(np.mean(acc[(0, b)]))
            row["ber"][f"{ber:g}"] = {
                "mean": mean, "ci95": ci, "paired_diff": diff, "paired_diff_ci95": diff_ci,
                "recovered": diff / lost if lost > 0 else None,
                "recovered_ci95": diff_ci / lost if lost > 0 else None,
                "mean_flips_by_dtype": next(r["mean_flips_by_dtype"] for r in rep["results"]
                                            if r["model"] == rep["models"][m]["model"] and r["ber"] == ber),
            }
        out[name] = row
    return out


def pooled(reports, hardened):
    """Recovered fraction of the model at index `hardened` over the original (index 0), pooling
    the trials of several campaigns (different seeds: independent trials) per BER."""
    out = {}
    for b, ber in enumerate(json.load(open(reports[0]))["config"]["bers"]):
        diffs, orig, clean = [], [], []
        for path in reports:
            rep = json.load(open(path))
            acc = {}
            for t in rep["trials"]:
                if t["ber"] == b:
                    acc.setdefault(t["model"], {})[t["trial"]] = t["accuracy"]
            diffs += [acc[hardened][k] - acc[0][k] for k in sorted(acc[0])]
            orig += list(acc[0].values())
            clean.append(rep["models"][0]["clean_accuracy"])
        diff, ci = mean_ci(diffs)
        lost = float(np.mean(clean)) - float(np.mean(orig))
        out[f"{ber:g}"] = {"trials": len(diffs), "original": float(np.mean(orig)), "paired_diff": diff, "paired_diff_ci95": ci,
                           "recovered": diff / lost, "recovered_ci95": ci / lost}
    return out


def timing(models, rounds, runs):
    calib = np.load(os.path.join(FIX, "calib.npy"))
    variants = [(name, onnx.load(path), ALL) for name, path in models.items()]
    per_round = time_variants(variants, calib, rounds, runs)
    base = np.array(per_round["original"])
    return {
        name: {
            "median_ms": 1e3 * float(np.median(t)),
            "ratio_of_medians": float(np.median(t) / np.median(base)),
            "median_round_ratio": float(np.median(np.array(t) / base)),
            "round_ratio_range": [float(np.min(np.array(t) / base)), float(np.max(np.array(t) / base))],
        }
        for name, t in per_round.items()
    }


def print_table(fixture, rows, times, bers):
    print(f"\n{fixture}")
    head = "| model | clean | " + " | ".join(f"BER {b}" for b in bers) + " | " + \
        " | ".join(f"recovered {b}" for b in bers) + " | time vs original |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, r in rows.items():
        cells = [f"{100 * r['clean']:.2f}"]
        cells += [f"{100 * r['ber'][b]['mean']:.2f} ± {100 * r['ber'][b]['ci95']:.2f}" for b in bers]
        for b in bers:
            rec = r["ber"][b]["recovered"]
            cells.append("-" if name == "original" or rec is None else
                         f"{100 * rec:.0f}% ± {100 * r['ber'][b]['recovered_ci95']:.0f}")
        t = times.get(name)
        cells.append(f"{t['ratio_of_medians']:.2f}x ({t['round_ratio_range'][0]:.2f}-{t['round_ratio_range'][1]:.2f})" if t else "")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fitact-onnx"))
    p.add_argument("--fixtures", default=",".join(FIXTURES))
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--ber", default="1e-5,1e-4")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--models", default="original,fitact,fitact_searched,fitact_saturate,clipact,ranger,ranger_by_quant,eq255,ranger_by_quant_eq255",
                   help="the models of each campaign (the original first); also ranger_channel_by_quant(_eq255)")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--json", help="write every measurement here (merged into an existing file)")
    p.add_argument("--keep", help="keep the hardened models and campaign reports in this folder")
    p.add_argument("--reuse", action="store_true", help="reuse the models and reports found in --keep")
    p.add_argument("--pool", help="REPORT,REPORT,...: only pool these campaigns' trials (model --pool-model against model 0)")
    p.add_argument("--pool-model", type=int, default=1)
    args = p.parse_args()
    if args.pool:
        print(json.dumps(pooled(args.pool.split(","), args.pool_model), indent=1))
        return
    global REUSE
    REUSE = args.reuse
    result = json.load(open(args.json)) if args.json and os.path.exists(args.json) else {}
    result.setdefault("fixtures", {})
    result["versions"] = {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
    tmp = args.keep or tempfile.mkdtemp(prefix="precision_resilience.")
    os.makedirs(tmp, exist_ok=True)
    data, labels = os.path.join(tmp, "test.npy"), os.path.join(tmp, "test_labels.npy")
    if not (args.reuse and os.path.exists(data)):
        np.save(data, np.load(os.path.join(FIX, "test.npy"))[: args.images])
        np.save(labels, np.load(os.path.join(FIX, "test_labels.npy"))[: args.images])
    bers = [f"{float(b):g}" for b in args.ber.split(",")]
    for fixture in args.fixtures.split(","):
        print(f"== {fixture}: hardening", flush=True)
        models = make_models(args.binary, fixture, tmp, set(args.models.split(",")))
        report = os.path.join(tmp, f"{fixture}.campaign.json")
        print(f"== {fixture}: evaluate", flush=True)
        if REUSE and os.path.exists(report):
            cmd, seconds = json.load(open(report + ".cmd"))
        else:
            cmd, seconds = evaluate(args.binary, models, data, labels, args, report)
            json.dump([cmd, seconds], open(report + ".cmd", "w"))
        rows = summarize(report, models)
        times = {} if args.no_timing else timing(models, args.rounds, args.runs)
        print_table(fixture, rows, times, bers)
        result["fixtures"][fixture] = {
            "evaluate": " ".join(os.path.relpath(c, ROOT) if os.path.isabs(c) else c for c in cmd),
            "evaluate_seconds": seconds, "images": args.images, "models": rows, "timing": times,
            "shared_with_original": shared_weights(models), "load_at_end": os.getloadavg(),
        }
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
                f.write("\n")
    if not args.keep:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
