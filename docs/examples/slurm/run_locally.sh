#!/usr/bin/env bash
# campaign.sbatch and merge.sbatch run here, without Slurm: the array job's script 4 times,
# with the variables Slurm sets in the tasks of `--array=0-3`, then the merge job's; then one
# process runs the whole campaign, and the two reports must be the same, byte for byte.
# A small campaign on the repository's AlexNet fixture (python3 with numpy takes its first 64
# test samples). tests/shards_schedulers.rs runs it.
#
#   docs/examples/slurm/run_locally.sh [WORK_DIR]    (FITACT: the binary to run, default
#                                                    target/debug/fitact-onnx)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
export FITACT=${FITACT:-$repo/target/debug/fitact-onnx}
python3 - "$repo/fixtures" <<'PY'
import sys, numpy as np
fixtures = sys.argv[1]
np.save("test.npy", np.load(f"{fixtures}/test.npy")[:64])
np.save("test_labels.npy", np.load(f"{fixtures}/test_labels.npy")[:64])
PY
export MODELS="$repo/fixtures/alexnet.onnx" DATA=test.npy LABELS=test_labels.npy OUT=shards
export CAMPAIGN="--ber 1e-5,1e-4 --trials 4 --seed 3 --batch-size 16"

for task in 0 1 2 3; do
    SLURM_ARRAY_JOB_ID=1000 SLURM_ARRAY_TASK_ID=$task SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=3 \
        SLURM_ARRAY_TASK_COUNT=4 SLURM_ARRAY_TASK_STEP=1 SLURM_CPUS_PER_TASK=1 \
        bash "$here/campaign.sbatch"
done
bash "$here/merge.sbatch"

# shellcheck disable=SC2086 # MODELS and CAMPAIGN are lists of words
"$FITACT" evaluate $MODELS --data "$DATA" --labels "$LABELS" $CAMPAIGN -q --report single.json
cmp campaign.json single.json
echo "$work: merged = single process ($(ls shards | wc -l) shards)"
