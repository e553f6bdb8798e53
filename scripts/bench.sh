#!/usr/bin/env bash
# A benchmark by name, in the project's venv: bash scripts/bench.sh biwkv_scaling [args]
# (also edit_quality; unet_patch_cost and tuning_cost need COMFYUI_PATH).
source "$(dirname "$0")/setup_venv.sh"
name="${1:?name a benchmark: biwkv_scaling, edit_quality, unet_patch_cost, tuning_cost}"
shift
python -m "bench.$name" "$@"
