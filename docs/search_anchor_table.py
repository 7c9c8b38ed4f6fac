#!/usr/bin/env python3
"""Markdown tables of docs/search_anchor.sh's campaigns: per fixture and calibration size, the
accuracy under weight faults of the models, each with its paired differences against
Clip-Act and against the anchor (FitAct's gradient training), over trials with the same index
(the same flips in tensors the models share).

    python3 docs/search_anchor_table.py OUT_DIR
"""
import glob
import json
import math
import os
import re
import sys

MODELS = [
    ("original", "original"),
    (".calibrated", "calibrated fitact"),
    (".searched", "searched fitact (4-fold)"),
    (".resf32", "searched, resilience at float32 3e-4"),
    (".resq15", "searched, resilience at q15.16 3e-5"),
    (".clipact", "clip-act"),
    (".ranger", "ranger"),
    (".anchor", "FitAct gradient (anchor)"),
]
CLIP, ANCHOR = "clip-act", "FitAct gradient (anchor)"

# Two-sided 95% quantiles of Student's t by degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
        18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
        26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df):
    if df in T975:
        return T975[df]
    below = [d for d in T975 if d < df]
    return T975[max(below)] if df <= 120 else 1.960  # conservative between listed values


def name_of(path):
    stem = os.path.basename(path).removesuffix(".onnx")
    for suffix, name in MODELS[1:]:
        if stem.endswith(suffix):
            return name
    return "original"


def paired(a, b):
    """Mean of a - b over common trial indices and its 95% t half-width (points)."""
    d = [a[t] - b[t] for t in sorted(a) if t in b]
    n = len(d)
    mean = sum(d) / n
    if n < 2:
        return 100 * mean, float("nan"), n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return 100 * mean, 100 * t975(n - 1) * sd / math.sqrt(n), n


def cells(report):
    """({(model name, ber): text}, {model name: clean accuracy}, trials per cell)."""
    names = [name_of(m["model"]) for m in report["models"]]
    by = {}
    for t in report["trials"]:
        by.setdefault((names[t["model"]], t["ber"]), {})[t["trial"]] = t["accuracy"]
    out, counts = {}, set()
    for b, ber in enumerate(report["config"]["bers"]):
        for name in names:
            acc = by[(name, b)]
            counts.add(len(acc))
            text = f"{100 * sum(acc.values()) / len(acc):.1f}"
            diffs = []
            for ref, label in ((CLIP, "vs clip"), (ANCHOR, "vs anchor")):
                if name == ref:
                    diffs.append(f"{label} —")
                else:
                    d, h, _ = paired(acc, by[(ref, b)])
                    diffs.append(f"{label} {d:+.1f} ±{h:.1f}")
            out[(name, ber)] = f"{text} ({'; '.join(diffs)})"
    clean = {n: m["clean_accuracy"] for n, m in zip(names, report["models"])}
    return out, clean, counts


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/search_anchor"
    runs = []
    for path in glob.glob(f"{out_dir}/*-float32.json"):
        m = re.fullmatch(r"(.+)-(\d+)-float32\.json", os.path.basename(path))
        if m:
            runs.append((m.group(1), int(m.group(2))))
    if not runs:
        sys.exit(f"no <fixture>-<N>-float32.json in {out_dir}")
    order = {"resnet": 0, "alexnet": 1}
    for fixture, n in sorted(runs, key=lambda r: (order.get(r[0], 9), r[0], -r[1])):
        p = f"{out_dir}/{fixture}-{n}"
        f32 = json.load(open(f"{p}-float32.json"))
        q15 = json.load(open(f"{p}-q15.json")) if os.path.exists(f"{p}-q15.json") else None
        a, clean, counts = cells(f32)
        columns = [("float32", ber, a) for ber in f32["config"]["bers"]]
        if q15:
            b, clean_q, counts_q = cells(q15)
            clean = {**clean_q, **clean}
            counts |= counts_q
            columns += [("q15.16", ber, b) for ber in q15["config"]["bers"]]
        trials = sorted(counts)
        tq = ", ".join(f"{t975(k - 1):.3f} for {k}" for k in trials)
        cfg = f32["config"]
        print(f"\n### {fixture}, {n} calibration samples\n")
        print(
            f"Accuracy (%) on {cfg['samples']} test images, {'/'.join(map(str, trials))} paired trials per BER"
            f" (seed {cfg['seed']}), every model `--emission plain`. In parentheses: the paired difference"
            f" (points) against Clip-Act and against the anchor over trials with the same index, ± the 95%"
            f" half-width t·sd/√n with Student's t quantile (df = n - 1: {tq}).\n"
        )
        head = ["model", "clean"] + [f"{fmt} {ber:g}" for fmt, ber, _ in columns]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for _, name in MODELS:
            if name not in clean and not any((name, ber) in c for _, ber, c in columns):
                continue
            clean_text = f"{100 * clean[name]:.1f}" if name in clean else "—"
            row = [name, clean_text] + [c.get((name, ber), "—") for _, ber, c in columns]
            print("| " + " | ".join(row) + " |")
        print()
        search = json.load(open(f"{p}.searched.json")).get("search", {})
        times = json.load(open(f"{p}.times.json"))
        anchor = open(f"{p}.anchor.log").read() if os.path.exists(f"{p}.anchor.log") else ""
        ratio = re.search(r"ratio=([0-9.]+)", anchor)
        s, an = times["search_seconds"], times["anchor_seconds"]
        print(
            f"Search (tight): mean bound ratio (searched / calibrated) {search.get('mean_bound_ratio', float('nan')):.3f},"
            f" {search.get('evaluations')} evaluations, stopped {search.get('stopped')};"
            f" {s:.1f} s for the whole `harden --search` ({search.get('seconds', float('nan')):.1f} s in the search itself)."
        )
        for key, label, seconds in (("resf32", "float32 3e-4", "resilience_float32_seconds"),
                                    ("resq15", "q15.16 3e-5", "resilience_q15_seconds")):
            if not os.path.exists(f"{p}.{key}.json") or seconds not in times:
                continue
            log = json.load(open(f"{p}.{key}.json"))["search"]
            points = ", ".join(
                f"{100 * q['mean_scale']:.1f}%: {100 * q['fault_metric']:.1f}"
                + ("" if q["gain_lower_bound"] is None else f" (gain ≥ {100 * q['gain_lower_bound']:+.2f})")
                + (" chosen" if q["chosen"] else "")
                for q in log["fault_points"]
            )
            print(
                f"Resilience at {label}: {times[seconds]:.1f} s; mean bound ratio {log['mean_bound_ratio']:.3f};"
                f" accuracy under the search's own faults (128 calibration samples) by mean scale: {points}."
            )
        print(
            f"Anchor: {an:.1f} s for the whole `fitact_anchor.py` run ({times.get('anchor_train_seconds')} s of training)"
            + (f", mean bound {float(ratio.group(1)):.4f}x its initialisation" if ratio else "")
            + f"; search {times.get('search_threads')} threads, anchor {times.get('anchor_threads')}."
            + f" Anchor / search wall time: {an / s:.1f}x (tight)"
            + "".join(f", {an / times[k]:.1f}x ({label})" for k, label in
                      (("resilience_float32_seconds", "resilience float32"), ("resilience_q15_seconds", "resilience q15.16"))
                      if k in times)
            + "."
        )


if __name__ == "__main__":
    main()
