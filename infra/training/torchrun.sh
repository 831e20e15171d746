#!/usr/bin/env bash
# Data-parallel training with plain torchrun, one node or several.
#   infra/training/torchrun.sh tiny data/movielens-100k runs/tiny-ddp            # 2 CPU processes
#   NPROC=8 infra/training/torchrun.sh paper data/<dataset> runs/paper            # 8 GPUs
#   NNODES=2 NODE_RANK=0 MASTER=host0 NPROC=8 infra/training/torchrun.sh paper ...  # on each node
# Extra arguments go to the trainer: --set key=value, --resume, --tracking-root .
set -euo pipefail
profile=${1:?profile}; data=${2:?data folder}; run_dir=${3:?run folder}; shift 3
exec torchrun \
  --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" --nproc_per_node "${NPROC:-2}" \
  --master_addr "${MASTER:-127.0.0.1}" --master_port "${PORT:-29511}" \
  -m components.training.launch --profile "$profile" --data "$data" --run-dir "$run_dir" "$@"
