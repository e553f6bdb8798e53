#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): one command on a CUDA machine, under 8 minutes on
# one H100; writes bench/results/gpu_<device>.md and exits non-zero on any mismatch.
#   bash scripts/gpu_check.sh              # on the GPU machine, from a copy of the repo
#   bash scripts/gpu_check.sh --dry-run    # CPU, Triton's interpreter, tiny shapes (CI)
# Its Python: scripts/gpu_python.sh (the machine's own CUDA torch, never reinstalled).
source "$(dirname "$0")/gpu_python.sh"
exec "$PY" -m bench.gpu_check "$@"
