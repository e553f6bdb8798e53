#!/usr/bin/env bash
# The main job. With COMFYUI_PATH set (a ComfyUI checkout; COMFYUI_PYTHON = the Python that
# runs it, if not $COMFYUI_PATH/venv/bin/python): example workflow 1 end to end, headless
# (tools/edit_video.py; pass --video/--ckpt/--source/--edit for a real edit). Otherwise: one
# toy-world edit on the committed toy model (toyworld/edit_demo.py), written to a new
# folder output/toy_edit_<n>/ (before/after GIF and PNG, metrics.md).
source "$(dirname "$0")/setup_venv.sh"
if [ -n "${COMFYUI_PATH:-}" ]; then
    python tools/edit_video.py "$@"
else
    python -m toyworld.edit_demo "$@"
fi
