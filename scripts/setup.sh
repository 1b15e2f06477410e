#!/usr/bin/env bash
# Create .venv and install raysearch with pinned torch first (the offline-capable pair).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
# No wheel cache: torch and its CUDA wheels would keep ~3 GB twice on small CI disks.
export PIP_NO_CACHE_DIR=1
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[dev]"
