# Sourced by the other scripts: makes .venv (once) with the CPU build of torch and the
# test/benchmark requirements, and activates it. torch is pinned: an unpinned torch pulls
# a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VRWKV_VENV:-$ROOT/.venv}"
STAMP="$VENV/.requirements-stamp"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha1sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" -r "$ROOT/requirements-dev.txt"
    echo "$WANT" > "$STAMP"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
cd "$ROOT"
