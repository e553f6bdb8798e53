#!/usr/bin/env bash
# Runs the test suite. Unit tier always; the integration tier too when COMFYUI_PATH
# points at a ComfyUI checkout (see CONTRIBUTING.md, "Tests").
source "$(dirname "$0")/setup_venv.sh"
python -m pytest "$@"
