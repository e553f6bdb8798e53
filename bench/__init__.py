"""Benchmarks: `python -m bench.<name>` from the project root. Each compares our code
with its baseline side by side in one run and writes its results to bench/results/."""

import platform

from tools.load_pack import load_pack  # noqa: F401


def machine_name(device: str) -> str:
    """A human name for the machine the numbers come from."""
    import os

    import torch
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, CPU"
