#!/usr/bin/env bash
# Shows that a refactoring changed no output: runs `harden` and `evaluate` (and `merge`) of two
# binaries on every fixture with fixed seeds and compares what they write, byte for byte.
#
#   scripts/same_outputs.sh [BASE_REV]        (default BASE_REV: 3f9c700, main before the house issue)
#
# BASE_BIN and NEW_BIN name ready binaries; otherwise BASE_REV is built from `git archive` (into
# this worktree's target dir, then copied away) and the current tree with `cargo build --release`.
#
# What runs, for each fixture (fixtures/*.onnx and fixtures/resnet_torch_default/resnet.onnx)
# and each engine (tract, onnxruntime):
#   - harden with the default method, with --report; and harden --search (labels, max 6
#     evaluations, so it is deterministic and short), with --report;
#   - evaluate of the original and both hardened models (the base binary's, so both binaries
#     read the same files) on the first 256 test samples, BER 1e-6 and 1e-5, 4 trials, seed 7,
#     with --report, --csv, --plot, --html, --dump-faults and the table on stdout.
# Also every --help and `completions bash` (the command line's definition, moved into cli/).
# On alexnet, in onnxruntime, also: harden --search --objective resilience, evaluate --format
# q15.16 --bits 23-31, evaluate --fault activation, evaluate --shard 0/2 and 1/2 then merge.
#
# What is compared: every file written (models, external data, reports, CSV, SVG, HTML, fault
# dumps) and evaluate's stdout, byte for byte, except for the timing fields of the harden
# report: `calibration.seconds`, `search.seconds` (wall-clock times) and the search's reuse
# counters `samples_run`/`samples_reused` (they follow the folds' timing), which are removed
# from both sides before the comparison. harden's stderr summary is not compared (it prints them too).
# Exit status: 0 when everything is identical, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
base_rev=${1:-3f9c700}
work=$(mktemp -d "${TMPDIR:-/tmp}/same_outputs.XXXXXX")
echo "work dir: $work"

# Both binaries are copied under the same file name: --help prints the name it was run by.
mkdir -p "$work/base-bin" "$work/new-bin"
if [ -z "${BASE_BIN:-}" ]; then
    mkdir -p "$work/base-src"
    git archive "$base_rev" | tar -x -C "$work/base-src"
    (cd "$work/base-src" && CARGO_TARGET_DIR="$root/target" cargo build --release --locked --quiet)
    BASE_BIN=$root/target/release/fitact-onnx
fi
cp "$BASE_BIN" "$work/base-bin/fitact-onnx"
BASE_BIN=$work/base-bin/fitact-onnx
if [ -z "${NEW_BIN:-}" ]; then
    cargo build --release --locked --quiet
    NEW_BIN=$root/target/release/fitact-onnx
fi
cp "$NEW_BIN" "$work/new-bin/fitact-onnx"
NEW_BIN=$work/new-bin/fitact-onnx

fx=$root/fixtures
python3 - "$fx" "$work" <<'EOF'
import sys, numpy as np
fx, work = sys.argv[1:]
np.save(f"{work}/small.npy", np.load(f"{fx}/test.npy")[:256])
np.save(f"{work}/small_labels.npy", np.load(f"{fx}/test_labels.npy")[:256])
EOF
data=(--data "$work/small.npy" --labels "$work/small_labels.npy")
campaign=(--ber 1e-6,1e-5 --trials 4 --seed 7)

models=("$fx"/*.onnx "$fx/resnet_torch_default/resnet.onnx")

# run SIDE BIN: every command, its outputs in $work/SIDE (relative names, so reports name the
# same paths on both sides).
run() {
    local side=$1 bin=$2
    mkdir -p "$work/$side"
    cd "$work/$side"
    for model in "${models[@]}"; do
        local name
        name=$(basename "$(dirname "$model")")_$(basename "$model" .onnx)
        name=${name#fixtures_}
        for engine in tract onnxruntime; do
            local stem=$name.$engine
            "$bin" -q harden "$model" "$stem.hardened.onnx" --calib "$fx/calib.npy" --engine "$engine" \
                --report "$stem.hardened.json"
            "$bin" -q harden "$model" "$stem.searched.onnx" --calib "$fx/calib.npy" --engine "$engine" \
                --search --labels "$fx/calib_labels.npy" --max-evals 6 --report "$stem.searched.json"
            # evaluate reads the base side's hardened models, so both sides get the same inputs
            "$bin" evaluate "$model" "$work/base/$stem.hardened.onnx" "$work/base/$stem.searched.onnx" \
                "${data[@]}" "${campaign[@]}" --engine "$engine" --report "$stem.campaign.json" \
                --csv "$stem.campaign.csv" --plot "$stem.campaign.svg" --html "$stem.campaign.html" \
                --dump-faults "$stem.faults.json" >"$stem.campaign.stdout"
        done
    done
    local a=$fx/alexnet.onnx h=$work/base/alexnet.onnxruntime.hardened.onnx
    "$bin" -q harden "$a" alexnet.resilience.onnx --calib "$fx/calib.npy" --engine onnxruntime --search \
        --objective resilience --fault-patterns 2 --fault-ber 3e-5 --seed 3 --max-evals 6 \
        --report alexnet.resilience.json
    "$bin" evaluate "$a" "$h" "${data[@]}" "${campaign[@]}" --engine onnxruntime --format q15.16 --bits 23-31 \
        --report alexnet.q15.json --csv alexnet.q15.csv >alexnet.q15.stdout
    "$bin" evaluate "$a" "$h" "${data[@]}" --trials 4 --seed 7 --engine onnxruntime --fault activation \
        --report alexnet.activation.json --csv alexnet.activation.csv >alexnet.activation.stdout
    for k in 0 1; do
        "$bin" -q evaluate "$a" "$h" "${data[@]}" "${campaign[@]}" --engine onnxruntime --shard "$k/2" \
            --report "alexnet.shard$k.json"
    done
    "$bin" merge alexnet.shard0.json alexnet.shard1.json --report alexnet.merged.json --csv alexnet.merged.csv \
        --html alexnet.merged.html >alexnet.merged.stdout
    # The command line itself: every --help and a completion script (which lists every flag).
    "$bin" --help >help.stdout
    for command in harden evaluate merge check completions inspect; do
        "$bin" "$command" --help >"help.$command.stdout"
    done
    "$bin" completions bash >completions.bash.stdout
    cd "$root"
}

echo "base: $BASE_BIN"
run base "$BASE_BIN"
echo "new:  $NEW_BIN"
run new "$NEW_BIN"

# The harden reports' wall-clock fields, removed on both sides (nothing else is touched).
python3 - "$work" <<'EOF'
import json, pathlib, sys
for side in ("base", "new"):
    for path in pathlib.Path(sys.argv[1], side).glob("*.json"):
        report = json.loads(path.read_text())
        if not (isinstance(report, dict) and "calibration" in report):
            continue  # not a harden report: compared as written
        report["calibration"].pop("seconds")
        if report.get("search"):
            # The reuse counters depend on how the parallel folds interleave (three runs of
            # one binary gave 1281/712, 1302/748, 1289/710 with identical models).
            for timing in ("seconds", "samples_run", "samples_reused"):
                report["search"].pop(timing, None)
        path.write_text(json.dumps(report, indent=2) + "\n")
EOF

status=0
count=0
for file in "$work"/base/*; do
    other=$work/new/$(basename "$file")
    count=$((count + 1))
    if ! cmp -s "$file" "$other"; then
        echo "DIFFERENT: $(basename "$file")"
        status=1
    fi
done
for file in "$work"/new/*; do
    [ -e "$work/base/$(basename "$file")" ] || { echo "ONLY NEW: $(basename "$file")"; status=1; }
done
if [ $status = 0 ]; then
    echo "identical: $count files (models, reports, CSV, SVG, HTML, fault dumps, stdout, --help)"
else
    echo "outputs differ (see above; both sides are in $work)"
fi
exit $status
