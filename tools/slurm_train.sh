#!/bin/bash
# Train on several machines under SLURM: one torchrun per node, each starting one process per GPU.
# Submit with:  sbatch tools/slurm_train.sh --config configs/runs/simclr_fashion_mnist.yaml [key=value ...]
# See docs/multi_node.md.
#SBATCH --job-name=ebmssl
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1            # one launcher per node; torchrun starts the per-GPU processes
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@300            # SIGTERM 5 minutes before the time limit: ebmssl checkpoints and exits 143
#SBATCH --requeue                      # a preempted job goes back to the queue ...
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%j.out

set -euo pipefail
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
OUTPUT_DIR=${OUTPUT_DIR:-runs/$SLURM_JOB_NAME-$SLURM_JOB_ID}
RESUME=()
if [ -d "$OUTPUT_DIR/checkpoints" ]; then RESUME=(--resume auto); fi   # ... and continues where it stopped

# --signal=B:TERM reaches this batch shell: pass it to srun, which signals every task; torchrun passes it on
# to its workers, which save a checkpoint at the next step boundary and exit with 143.
srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_NNODES" --nproc_per_node "$GPUS_PER_NODE" \
    --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "$SLURM_JOB_ID" \
    tools/train.py --output-dir "$OUTPUT_DIR" "${RESUME[@]}" "$@" &
pid=$!
trap 'kill -TERM "$pid"' TERM
set +e
wait "$pid"; status=$?
if [ "$status" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then wait "$pid"; status=$?; fi  # woken by the trap
set -e
if [ "$status" -eq 143 ]; then
    echo "preempted: checkpoint saved; requeueing"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
