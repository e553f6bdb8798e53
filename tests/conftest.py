import os
import sys
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter; it must be chosen before
# triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from load_pack import load_pack  # noqa: E402

load_pack()
if os.environ.get("TRITON_INTERPRET") == "1":
    import fast_interpreter  # noqa: E402

    fast_interpreter.install()

# Kernel tests run on every device at hand: the CPU always, CUDA where present.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Each device at hand: a test taking it runs on the CPU, and on CUDA where present."""
    return request.param
