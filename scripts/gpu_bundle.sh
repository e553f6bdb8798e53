#!/usr/bin/env bash
# Bundles what the GPU bench's ComfyUI sections need for a GPU machine that has a CUDA PyTorch
# but no network: a trimmed copy of the ComfyUI checkout at COMFYUI_PATH in .gpu/comfy (no
# venv, git, tests, API nodes, or tokenizers other than SD1.5's: about 7 MB) and, in .gpu/whl,
# wheels of the ComfyUI requirements such an image lacks (torchsde, av, pydantic: about 38 MB,
# for Python $GPU_PYTHON_VERSION, default 3.12).
#   COMFYUI_PATH=<ComfyUI> bash scripts/gpu_bundle.sh       # here; copy .gpu/ with the repository
#   eval "$(bash scripts/gpu_bundle.sh --install)"           # there: installs the wheels into
#   bash scripts/gpu_bench.sh                                # .gpu/site and sets COMFYUI_PATH,
# COMFYUI_ARGS (no front end, no API nodes) and PYTHONPATH for the bench.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--install" ]]; then
    python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .gpu/site .gpu/whl/*.whl
    mkdir -p .gpu/frontend     # an empty front end: the bench queues workflows over HTTP only
    echo "export PYTHONPATH=$PWD/.gpu/site COMFYUI_PATH=$PWD/.gpu/comfy" \
         "COMFYUI_ARGS='--disable-api-nodes --front-end-root $PWD/.gpu/frontend'"
    exit 0
fi
: "${COMFYUI_PATH:?set COMFYUI_PATH to the ComfyUI checkout to bundle}"
rm -rf .gpu && mkdir -p .gpu/comfy .gpu/whl
tar -C "$COMFYUI_PATH" --exclude=./venv --exclude=./.venv --exclude=./.git --exclude=./tests --exclude=./tests-unit \
    --exclude=./comfy_api_nodes --exclude='*/__pycache__' --exclude=./custom_nodes --exclude=./models \
    --exclude=./input --exclude=./output --exclude=./temp --exclude=./user -cf - . | tar -xf - -C .gpu/comfy
find .gpu/comfy/comfy/text_encoders -mindepth 1 -maxdepth 1 -type d -name '*_tokenizer' -exec rm -rf {} +
mkdir -p .gpu/comfy/custom_nodes .gpu/comfy/models
# The versions this pack's integration tier runs ComfyUI with; --no-deps: the GPU image has the rest.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/whl \
    torchsde==0.2.6 trampoline==0.1.2 av==18.1.0 pydantic==2.14.4 pydantic_core==2.50.5 \
    typing_inspection==0.4.5 annotated_types==0.8.0
du -sh .gpu/comfy .gpu/whl
