#!/usr/bin/env bash
# The GPU bench (bench/gpu_bench.py): the GPU check's checks, then the kernel's bandwidth, the
# pipeline cost of every configuration in bf16 and fp32, fp16 sampling side by side and the
# minutes per edit; about 7 minutes on one H100, writes bench/results/, exits non-zero when
# a check fails.
#   COMFYUI_PATH=<ComfyUI> bash scripts/gpu_bench.sh    # on the GPU machine, from a copy of the repo
#   bash scripts/gpu_bench.sh --dry-run                 # CPU, Triton's interpreter, tiny sizes (CI)
# Python and requirements: scripts/gpu_python.sh; the pipeline sections need COMFYUI_PATH and
# run under COMFYUI_PYTHON (default: the same Python, which then needs ComfyUI's requirements).
source "$(dirname "$0")/gpu_python.sh"
exec "$PY" -m bench.gpu_bench "$@"
