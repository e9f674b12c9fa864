#!/bin/bash
# Multi-node XDLM continued pretraining with SLURM: one task per node, accelerate starts 8 processes on each.
#   sbatch --nodes=4 recipes/accelerate/launch_slurm.sh recipes/llada_cpt.yaml
# With N nodes x 8 GPUs, divide gradient_accumulation_steps by N to keep the paper's global batch
# (e.g. 4 nodes: --gradient_accumulation_steps 16).
#SBATCH --job-name=xdlm-cpt
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

RECIPE=${1:?usage: sbatch --nodes=N recipes/accelerate/launch_slurm.sh RECIPE.yaml [--key value ...]}
shift
GPUS_PER_NODE=8
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}

srun --kill-on-bad-exit=1 bash -c "accelerate launch \
  --config_file recipes/accelerate/deepspeed_zero3_multinode.yaml \
  --num_machines $SLURM_NNODES \
  --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
  --machine_rank \$SLURM_NODEID \
  --main_process_ip $MAIN_IP \
  --main_process_port 29500 \
  -m llada_xdlm.train $RECIPE $*"
