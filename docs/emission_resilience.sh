#!/bin/bash
# Resilience of the emission forms: paired weight-fault campaigns on the CNN fixtures.
# Usage (from the repository root, after cargo build --release): docs/emission_resilience.sh [OUT_DIR]
# then: python3 docs/emission_resilience_table.py OUT_DIR
# FIXTURES (default "alexnet vgg resnet mobilenetv3") and TRIALS (default 24) override the run.
# Clip-Act and Ranger are the published forms (--emission plain); "clipact-foldthr" is
# Clip-Act's function in the default emission (the scaled threshold at every Relu).
set -e
B="${FITACT:-target/release/fitact-onnx}"
F="$PWD/fixtures"; B="$(realpath "$B")"
OUT="${1:-/tmp/emission_resilience}"; mkdir -p "$OUT"; cd "$OUT"
python3 -c "
import numpy as np
np.save('test.npy', np.load('$F/test.npy')[:300]); np.save('labels.npy', np.load('$F/test_labels.npy')[:300])"
T="${TRIALS:-24}"
for m in ${FIXTURES:-alexnet vgg resnet mobilenetv3}; do
  $B harden $F/$m.onnx $m.clipact.onnx --calib $F/calib.npy --method clipact --emission plain -q
  $B harden $F/$m.onnx $m.clipact-foldthr.onnx --calib $F/calib.npy --method clipact --emission fold-threshold -q
  $B harden $F/$m.onnx $m.ranger.onnx --calib $F/calib.npy --method ranger --emission plain -q
  $B harden $F/$m.onnx $m.fitact-plain.onnx --calib $F/calib.npy --method fitact --emission plain -q
  $B harden $F/$m.onnx $m.fitact-foldthr.onnx --calib $F/calib.npy --method fitact --emission fold-threshold -q
  $B harden $F/$m.onnx $m.sat-plain.onnx --calib $F/calib.npy --method fitact --mode saturate --emission plain -q
  $B harden $F/$m.onnx $m.sat-fold.onnx --calib $F/calib.npy --method fitact --mode saturate --emission fold -q
  models="$F/$m.onnx $m.clipact.onnx $m.clipact-foldthr.onnx $m.ranger.onnx $m.fitact-plain.onnx $m.fitact-foldthr.onnx $m.sat-plain.onnx $m.sat-fold.onnx"
  $B evaluate $models --data test.npy --labels labels.npy --ber 1e-5,3e-5 --trials $T --seed 7 --format float32 --report $m-float32.json -q
  $B evaluate $models --data test.npy --labels labels.npy --ber 3e-5 --trials $T --seed 7 --format q15.16 --report $m-q15.json -q
  echo "$m done $(date +%T)"
done
