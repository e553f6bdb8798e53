"""Safetensors writes that lose nothing a user made: a temp file in the same folder, renamed
only once complete, and never over an existing file (a taken name gets the next counter
suffix, `<name>_00001.safetensors`, as ComfyUI's savers number their outputs)."""

import os
import tempfile
from pathlib import Path

from safetensors.torch import save_file

MAX_COUNTER = 99999


def save_safetensors_atomic(tensors: dict, path: str | Path, metadata: dict) -> Path:
    """Writes `path`, or its first free counter name when `path` exists; returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; a saved file gets the user's usual mode
        for n in range(MAX_COUNTER + 1):
            target = path if n == 0 else path.with_name(f"{path.stem}_{n:05d}{path.suffix}")
            if _claim(tmp, target):
                return target
        raise FileExistsError(f"{path} and its {MAX_COUNTER} numbered versions all exist; choose another name")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _claim(tmp: str, target: Path) -> bool:
    """Names the finished temp file `target` unless that name is taken: a hard link claims
    a name atomically; file systems without hard links check, then rename."""
    try:
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    except OSError:
        if target.exists():
            return False
        os.replace(tmp, target)
        return True
