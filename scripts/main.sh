#!/usr/bin/env bash
# The main job on its built-in default: the Bi-WKV vs attention benchmark (prints the
# table, writes bench/results/biwkv_scaling_<device>.png).
source "$(dirname "$0")/setup_venv.sh"
python -m bench.biwkv_scaling "$@"
