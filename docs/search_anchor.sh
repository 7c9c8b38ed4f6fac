#!/bin/bash
# The 4-fold search against FitAct's gradient training (the anchor) under weight faults: for
# each fixture and calibration size N, the models original, calibrated fitact, searched fitact
# (objective tight), searched for the campaign's fault model (objective resilience: float32 at
# 3e-4, q15.16 at 3e-5, the issue's two target BERs), Clip-Act, Ranger and the anchor, all with
# --emission plain so that only the bounds differ, and two paired campaigns (float32 and
# q15.16) on the first 500 test images. The anchor trains on as many threads as the search
# runs (all cores), so that their wall times compare.
# Usage (from the repository root, after cargo build --release): docs/search_anchor.sh [OUT_DIR]
# then: python3 docs/search_anchor_table.py OUT_DIR
# FIXTURES (default "resnet alexnet"), SIZES (calibration sizes, default 512; 64..512 for the
# anchor) and TRIALS (default 30) override the run; FITACT the binary.
# Writes per fixture M and size N: calib-N.npy, labels-N.npy, test.npy, test_labels.npy,
# M-N.{calibrated,searched,resf32,resq15,clipact,ranger,anchor}.onnx, M-N.{searched,resf32,
# resq15}.json (harden reports), M-N.anchor.json (trained bounds) and M-N.anchor.log,
# M-N.times.json (seconds of each search and of the anchor's whole run), M-N-float32.json and
# M-N-q15.json (campaign reports).
set -euo pipefail
B="${FITACT:-target/release/fitact-onnx}"
F="$PWD/fixtures"; B="$(realpath "$B")"; ANCHOR="$PWD/docs/fitact_anchor.py"
OUT="${1:-/tmp/search_anchor}"; mkdir -p "$OUT"; cd "$OUT"
T="${TRIALS:-30}"
THREADS="$(nproc)"
SIZES="${SIZES:-512}"
python3 - "$F" $SIZES <<'EOF'
import sys
import numpy as np
f, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
calib, labels = np.load(f"{f}/calib.npy"), np.load(f"{f}/calib_labels.npy")
for n in sizes:
    assert n <= len(calib), f"{n} > {len(calib)} calibration rows"
    np.save(f"calib-{n}.npy", calib[:n]); np.save(f"labels-{n}.npy", labels[:n])
np.save("test.npy", np.load(f"{f}/test.npy")[:500]); np.save("test_labels.npy", np.load(f"{f}/test_labels.npy")[:500])
EOF
for m in ${FIXTURES:-resnet alexnet}; do
  for n in $SIZES; do
    p="$m-$n"; C="--calib calib-$n.npy --emission plain -q"
    echo "$p start $(date -u +%T)"
    $B harden $F/$m.onnx $p.calibrated.onnx $C --method fitact
    S="--method fitact --search --labels labels-$n.npy"
    s0=$(date +%s.%N)
    $B harden $F/$m.onnx $p.searched.onnx $C $S --objective tight --report $p.searched.json
    s1=$(date +%s.%N)
    $B harden $F/$m.onnx $p.resf32.onnx $C $S --objective resilience --fault-format float32 --fault-ber 3e-4 --report $p.resf32.json
    s2=$(date +%s.%N)
    $B harden $F/$m.onnx $p.resq15.onnx $C $S --objective resilience --fault-format q15.16 --fault-ber 3e-5 --report $p.resq15.json
    s3=$(date +%s.%N)
    $B harden $F/$m.onnx $p.clipact.onnx $C --method clipact
    $B harden $F/$m.onnx $p.ranger.onnx $C --method ranger
    a0=$(date +%s.%N)
    python3 "$ANCHOR" $F/$m.onnx --granularity channel --samples $n --threads $THREADS --out $p.anchor.json | tee $p.anchor.log
    a1=$(date +%s.%N)
    $B harden $F/$m.onnx $p.anchor.onnx $C --bounds $p.anchor.json
    python3 -c "
import json, os
s, a = $s1 - $s0, $a1 - $a0
json.dump({'fixture': '$m', 'samples': $n, 'search_seconds': round(s, 3), 'anchor_seconds': round(a, 3),
           'resilience_float32_seconds': round($s2 - $s1, 3), 'resilience_q15_seconds': round($s3 - $s2, 3),
           'anchor_train_seconds': json.load(open('$p.anchor.json')).get('train_seconds'),
           'search_threads': $THREADS, 'anchor_threads': $THREADS,
           'note': 'wall seconds of the whole harden --search and fitact_anchor.py processes (anchor: load, self-check, training, test accuracy); anchor_train_seconds is its training loop alone'},
          open('$p.times.json', 'w'), indent=1)"
    echo "$p hardened $(date -u +%T): search $(python3 -c "print(round($s1 - $s0, 1))") s, anchor $(python3 -c "print(round($a1 - $a0, 1))") s"
    models="$F/$m.onnx $p.calibrated.onnx $p.searched.onnx $p.clipact.onnx $p.ranger.onnx $p.anchor.onnx"
    e0=$(date +%s)
    $B evaluate $models $p.resf32.onnx --data test.npy --labels test_labels.npy --ber 1e-5,3e-5,3e-4 --format float32 --trials $T --seed 7 --report $p-float32.json -q
    e1=$(date +%s)
    $B evaluate $models $p.resq15.onnx --data test.npy --labels test_labels.npy --ber 1e-5,3e-5 --format q15.16 --trials $T --seed 7 --report $p-q15.json -q
    e2=$(date +%s)
    echo "$p done $(date -u +%T): float32 campaign $((e1 - e0)) s, q15.16 campaign $((e2 - e1)) s"
  done
done
