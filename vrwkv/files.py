"""Writing safetensors files so that nothing a user made is lost: a temp file in the same
folder, renamed over the target only once complete (an interrupted write leaves the old
file, never a truncated one)."""

import os
import tempfile
from pathlib import Path

from safetensors.torch import save_file


def save_safetensors_atomic(tensors: dict, path: str | Path, metadata: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
