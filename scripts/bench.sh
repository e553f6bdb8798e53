#!/usr/bin/env bash
# A benchmark by name, in the project's venv: bash scripts/bench.sh biwkv_scaling [args]
# (also edit_quality, long_clip_coherence). unet_patch_cost, pipeline_cost and
# long_clips run inside ComfyUI:
# set COMFYUI_PATH, and COMFYUI_PYTHON to the Python that runs it (e.g. its venv's) when the
# project's venv lacks ComfyUI's requirements.
source "$(dirname "$0")/setup_venv.sh"
name="${1:?name a benchmark: biwkv_scaling, edit_quality, long_clip_coherence, unet_patch_cost, pipeline_cost, long_clips}"
shift
case "$name" in
    unet_patch_cost|pipeline_cost|long_clips)
        : "${COMFYUI_PATH:?set COMFYUI_PATH to a ComfyUI checkout for $name}"
        "${COMFYUI_PYTHON:-python}" -m "bench.$name" "$@" ;;
    *) python -m "bench.$name" "$@" ;;
esac
