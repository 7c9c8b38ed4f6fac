#!/bin/bash
# Clean top-1 accuracy on the whole test split (2,000 images, never seen by a search) of the
# models docs/search_anchor.sh wrote: per fixture and calibration size, the original, the
# calibrated bounds, the anchor, the tight search and the two resilience searches, and each
# search's drop against the calibrated bounds (the budget is 0.5 points).
# Usage (from the repository root, after docs/search_anchor.sh OUT_DIR): docs/search_anchor_clean.sh OUT_DIR
set -euo pipefail
B="$(realpath "${FITACT:-target/release/fitact-onnx}")"; F="$PWD/fixtures"
OUT="${1:-/tmp/search_anchor}"; cd "$OUT"
KINDS="calibrated anchor searched resf32 resq15"
echo "| fixture, N | original | calibrated | anchor | searched (tight) | resilience float32 3e-4 | resilience q15.16 3e-5 | tight − calibrated | resilience q15.16 − calibrated |"
echo "|---|---|---|---|---|---|---|---|---|"
for m in ${FIXTURES:-resnet alexnet vgg}; do for n in ${SIZES:-64 128 256 512}; do
  p=$m-$n; [ -f $p.searched.onnx ] || continue
  for k in $KINDS; do
    $B check $p.$k.onnx --reference $F/$m.onnx --data $F/test.npy --labels $F/test_labels.npy \
      --max-accuracy-drop 100% --report $p.$k.clean.json -q >/dev/null
  done
  python3 - "$p" $KINDS <<'PY'
import json, sys
p, kinds = sys.argv[1], sys.argv[2:]
r = {k: json.load(open(f"{p}.{k}.clean.json")) for k in kinds}
v = {k: 100 * r[k]["value"] for k in kinds}
m, n = p.rsplit("-", 1)
cells = [f"{100 * r['calibrated']['reference_value']:.2f}"] + [f"{v[k]:.2f}" for k in kinds]
cells += [f"{v['searched'] - v['calibrated']:+.2f}", f"{v['resq15'] - v['calibrated']:+.2f}"]
print(f"| {m}, {n} | " + " | ".join(cells) + " |")
PY
done; done
