#!/bin/bash
# Multi-node embedding run with eocausal + Lightning DDP under SLURM (a template: edit the
# #SBATCH lines for your cluster). Lightning reads the SLURM environment: one task per GPU,
# --ntasks-per-node must equal `devices`, --nodes must equal `num_nodes`, launched with srun.
#
#   sbatch scripts/slurm_embed.sh configs/cluster_vit.yaml
#
# The job is resumable: if it is killed (time limit, preemption), submit it again with the
# same config and out_dir; finished shards are kept and their units skipped.
#SBATCH --job-name=eocausal-embed
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=8
#SBATCH --mem=0
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_embed.sh CONFIG.yaml}
NODES=${SLURM_JOB_NUM_NODES:-1}
DEVICES=${SLURM_NTASKS_PER_NODE:-1}
mkdir -p logs

# Weights are never downloaded inside the job: fetch them once on a login node, e.g.
#   eocausal weights fetch ssl4eo_l_oli_sr_moco --cache-dir "$EOCAUSAL_CACHE/weights"
export EOCAUSAL_CACHE=${EOCAUSAL_CACHE:-$HOME/.cache/eocausal}
# DataLoader workers each read imagery with one GDAL thread; leave the rest to them.
export OMP_NUM_THREADS=1
export GDAL_NUM_THREADS=1
export GDAL_CACHEMAX=512

srun eocausal embed "$CONFIG" \
    --accelerator gpu --devices "$DEVICES" --num-nodes "$NODES" --strategy ddp \
    --num-workers "${SLURM_CPUS_PER_TASK:-4}"
