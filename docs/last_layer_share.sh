#!/bin/bash
# How much of the damage float32 weight faults at BER 3e-4 do lies in the last layer's weights,
# which come after every activation and so beyond any activation bound. Per fixture: Clip-Act
# and calibrated per-channel FitAct (`--emission plain`, 512 calibration samples), three paired
# campaigns on the first 500 test images (30 trials, seed 7): faults everywhere, in the last
# layer's weights and bias only, and in the original's other weight tensors only (`evaluate
# --target`; the bound tensors flip only in the first).
# Usage (from the repository root, after cargo build --release): docs/last_layer_share.sh [OUT_DIR]
# then: python3 docs/last_layer_share.py OUT_DIR
set -euo pipefail
B="$(realpath "${FITACT:-target/release/fitact-onnx}")"; F="$PWD/fixtures"
OUT="${1:-/tmp/last_layer}"; mkdir -p "$OUT"; cd "$OUT"
python3 -c "
import numpy as np
np.save('test.npy', np.load('$F/test.npy')[:500]); np.save('test_labels.npy', np.load('$F/test_labels.npy')[:500])"
# The last layer's tensors, and a pattern for every other weight tensor, per fixture.
declare -A LAST=([alexnet]='^classifier\.6\.' [vgg]='^classifier\.5\.' [resnet]='^fc\.')
declare -A REST=([alexnet]='^(features|classifier\.[14])\.' [vgg]='^(features|classifier\.[03])\.' [resnet]='^onnx::Conv_')
for m in alexnet vgg resnet; do
  $B harden $F/$m.onnx $m.clipact.onnx --calib $F/calib.npy --emission plain -q --method clipact
  $B harden $F/$m.onnx $m.fitact.onnx --calib $F/calib.npy --emission plain -q --method fitact
  E="$B evaluate $m.clipact.onnx $m.fitact.onnx --data test.npy --labels test_labels.npy --ber 3e-4 --format float32 --trials 30 --seed 7 -q"
  $E --report $m-all.json
  $E --target "${LAST[$m]}" --report $m-last.json
  $E --target "${REST[$m]}" --report $m-rest.json
  echo "$m done"
done
