# Sourced by gpu_check.sh and gpu_bench.sh with their arguments: cd to the repository and set
# PY to the Python that already holds the machine's own CUDA torch (PYTHON, else python3; the
# project venv for --dry-run when there is one), installing only what it lacks, never torch:
# GPU machines may have no network, so nothing is fetched that is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
if [[ " $* " == *" --dry-run "* && -z "${PYTHON:-}" && -x .venv/bin/python ]]; then
    PY=.venv/bin/python
fi
if ! "$PY" -c "import torch, triton, einops, safetensors, numpy, pytest" 2>/dev/null; then
    echo "$(basename "$0" .sh): installing the pack's requirements and pytest (torch is left as it is)"
    "$PY" -m pip install --quiet --retries 1 --timeout 20 -r requirements.txt pytest
fi
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
