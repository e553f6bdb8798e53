#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): one command on a CUDA machine, under 8 minutes on
# one H100; writes bench/results/gpu_<device>.md and exits non-zero on any mismatch.
#   bash scripts/gpu_check.sh              # on the GPU machine, from a copy of the repo
#   bash scripts/gpu_check.sh --dry-run    # CPU, Triton's interpreter, tiny shapes (CI)
# It runs under the Python that already holds the machine's own CUDA torch (PYTHON, else
# python3; the project venv for --dry-run when there is one) and installs only what that
# Python lacks, never torch: GPU machines may have no network, so nothing is fetched that
# is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [[ " $* " == *" --dry-run "* && -z "${PYTHON:-}" && -x .venv/bin/python ]]; then
    PY=.venv/bin/python
fi
if ! "$PY" -c "import torch, triton, einops, safetensors, numpy, pytest" 2>/dev/null; then
    echo "gpu_check: installing the pack's requirements and pytest (torch is left as it is)"
    "$PY" -m pip install --quiet --retries 1 --timeout 20 -r requirements.txt pytest
fi
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
exec "$PY" -m bench.gpu_check "$@"
