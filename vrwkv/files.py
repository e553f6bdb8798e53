"""Writing safetensors files so that nothing a user made is lost: a temp file in the same
folder, given its final name only once complete (an interrupted write leaves no truncated
file), and never over an existing file: when the name is taken the file gets the next free
counter suffix, `<name>_00001.safetensors`, `_00002`, ... as ComfyUI's own savers number
their outputs."""

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
    """Gives the finished temp file the name `target` unless a file has it. A hard link is
    created only if the name is free, so two writers cannot take the same name; file
    systems without hard links fall back to a check then a rename."""
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
