#!/usr/bin/env bash
# The main job. With COMFYUI_PATH set (a ComfyUI checkout; COMFYUI_PYTHON = the Python that
# runs it, if not $COMFYUI_PATH/venv/bin/python): example workflow 1 end to end, headless
# (tools/edit_video.py; pass --video/--ckpt/--source/--edit for a real edit). Otherwise: the
# Bi-WKV vs attention benchmark (table + bench/results/biwkv_scaling_<device>.png).
source "$(dirname "$0")/setup_venv.sh"
if [ -n "${COMFYUI_PATH:-}" ]; then
    python tools/edit_video.py "$@"
else
    python -m bench.biwkv_scaling "$@"
fi
