#!/usr/bin/env bash
# GPU smoke check (bench/gpu_smoke.py): trains one MTL configuration on the GPU with `raysearch train`
# (bf16 autocast + channels_last), compares its throughput with a bare AMP PyTorch loop on the same
# model, and runs one DDP trial through `raysearch tune` (Ray Train, NCCL).  Options go to the helper
# (--dataset, --image-size, --batch-size, --epochs, --ddp-gpus, --data-root; --help).
#
# Exit status: 0 ok; 1 a step failed; 77 not run: torch cannot use CUDA here (one line on stderr
# saying why: no GPU, a CPU-only torch, or a driver older than the torch build needs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
export WANDB_MODE="${WANDB_MODE:-offline}"
exec "$PY" bench/gpu_smoke.py "$@"
