#!/usr/bin/env bash
# Submits the campaign (campaign.sbatch, an array job) and its merge (merge.sbatch), which
# starts once every task of the array has succeeded. Run it from the campaign's folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p logs # Slurm does not make the folder of --output
array=$(sbatch --parsable "$here/campaign.sbatch")
array=${array%%;*} # --parsable prints "job id[;cluster]"
sbatch --dependency=afterok:"$array" "$here/merge.sbatch"
