#!/usr/bin/env bash
# The GPU bench (bench/gpu_bench.py): the GPU check's checks, then the kernel's bandwidth, the
# pipeline cost of every configuration in bf16 and fp32, fp16 sampling side by side and the
# minutes per edit; about 7 minutes on one H100, writes bench/results/, exits non-zero when
# a check fails.
#   COMFYUI_PATH=<ComfyUI> bash scripts/gpu_bench.sh    # on the GPU machine, from a copy of the repo
#   bash scripts/gpu_bench.sh --dry-run                 # CPU, Triton's interpreter, tiny sizes (CI)
# Python and requirements as scripts/gpu_check.sh; the pipeline sections need COMFYUI_PATH and
# run under COMFYUI_PYTHON (default: the same Python, which then needs ComfyUI's requirements).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [[ " $* " == *" --dry-run "* && -z "${PYTHON:-}" && -x .venv/bin/python ]]; then
    PY=.venv/bin/python
fi
if ! "$PY" -c "import torch, triton, einops, safetensors, numpy, pytest" 2>/dev/null; then
    echo "gpu_bench: installing the pack's requirements and pytest (torch is left as it is)"
    "$PY" -m pip install --quiet --retries 1 --timeout 20 -r requirements.txt pytest
fi
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
exec "$PY" -m bench.gpu_bench "$@"
