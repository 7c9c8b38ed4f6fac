#!/usr/bin/env bash
# fitact-onnx benchmarks: one entry point.
#
# What it measures, on the fixture CNNs (fixtures/{alexnet,vgg,resnet}.onnx, Fashion-MNIST,
# 512 calibration samples of fixtures/calib.npy):
#   1. benches/calibration.rs (onnxruntime when found, and tract): time of `calibrate` (every
#      activation, per-neuron extremes) over one plain pass of the same samples in the same
#      engine, batch 8, model load included; also the MobileNetV3-style fixture.
#   2. benches/inference.rs (tract): inference time of hardened models (fitact/channel,
#      fitact/neuron, clipact/layer, ranger/layer) over the original, batch 64 and batch 1.
#   3. benches/ort.py (onnxruntime, 1 intra-op thread): (a) the same overheads in onnxruntime;
#      (b) onnxruntime's MinMax calibrator (create_calibrator + collect_data + compute_data)
#      over our `harden` calibration, same samples, batch 64.
# Every figure is a median of alternating repetitions; all runs are single-threaded.
#
# How long: building is `cargo build --release` (~7-9 min from clean on 2 cores, seconds when
# up to date) plus `cargo bench --no-run` (another ~7-10 min from clean: with the
# dev-dependencies in the feature set, cargo builds a second copy of tract for the benches).
# The measurements take about 5 minutes on 2 cores for the three fixtures (6 with
# FITACT_BENCH_EMISSIONS=1). Knobs: FITACT_BENCH_MODELS=alexnet,vgg,resnet,
# FITACT_BENCH_REPS (Rust benches, default 7), ORT_REPS (default 15), FITACT_BENCH_WAIT
# (seconds to wait for missing fixtures, default 0), FITACT_BENCH_EMISSIONS=1 (also time the
# alternative zero-mode emission of benches/emission_variants.py, ~+1 min). Logs go to
# ${FITACT_BENCH_OUT:-target/bench-results}/<timestamp>/.
#
# Usage: benches/run.sh     (from anywhere; needs cargo, python3 with onnx + onnxruntime)

set -euo pipefail
cd "$(dirname "$0")/.."

models="${FITACT_BENCH_MODELS:-alexnet,vgg,resnet}"
export FITACT_BENCH_MODELS="$models"
wait_s="${FITACT_BENCH_WAIT:-0}"
out="${FITACT_BENCH_OUT:-target/bench-results}/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

python3 -c 'import onnx, onnxruntime, numpy' || {
    echo "error: python3 needs onnx, onnxruntime and numpy (pip install onnx onnxruntime)" >&2
    exit 2
}

# Fixtures may still be being trained: wait up to FITACT_BENCH_WAIT seconds for them.
for m in ${models//,/ }; do
    waited=0
    while [[ ! -f "fixtures/$m.onnx" && $waited -lt $wait_s ]]; do
        sleep 10
        waited=$((waited + 10))
    done
    [[ -f "fixtures/$m.onnx" ]] || echo "warning: fixtures/$m.onnx is missing; it will be skipped" >&2
done

echo "== building (release binary and bench targets)"
cargo build --release --quiet
cargo bench --no-run --quiet

started=$(date +%s)
extra_args=()
if [[ "${FITACT_BENCH_EMISSIONS:-0}" == 1 ]]; then
    echo "== writing alternative emissions"
    python3 benches/emission_variants.py --out "$out/emissions" --models "$models"
    export FITACT_BENCH_EXTRA_DIR="$out/emissions"
    extra_args=(--extra-dir "$out/emissions")
fi
echo "== calibration vs plain inference, per engine"
cargo bench --quiet --bench calibration | tee "$out/calibration.txt"
echo "== tract: inference overhead of hardened models"
cargo bench --quiet --bench inference | tee "$out/inference.txt"
echo "== onnxruntime: inference overhead and calibrator"
python3 benches/ort.py --bin target/release/fitact-onnx --models "$models" \
    --reps "${ORT_REPS:-15}" "${extra_args[@]}" | tee "$out/ort.txt"
elapsed=$(($(date +%s) - started))

echo
echo "== summary (medians; logs in $out; measured in ${elapsed} s)"
python3 benches/summary.py "$out"/calibration.txt "$out"/inference.txt "$out"/ort.txt | tee "$out/summary.txt"
