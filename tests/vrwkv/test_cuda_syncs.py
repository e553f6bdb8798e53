"""No host synchronisation inside a UNet call on CUDA: a read-back per Bi-WKV call (a
finiteness check, a data-dependent dtype choice) stalls the GPU's queue once per block,
every sampling step. torch.cuda.set_sync_debug_mode("error") turns any synchronisation
into an error naming the operation, around a patched miniature UNet call, sampling (no
grad) and tuning (forward + backward), after a warm-up call (which may synchronise once:
kernel compilation and the Triton self-check)."""

import functools

import pytest
import torch

from test_blocks import make_patch, randomise_outputs, unet_inputs
from toyworld.unet import latent_unet
from vrwkv_editor.kernels import bi_wkv
from vrwkv_editor.vrwkv import blocks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def without_syncs(fn):
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_unet_call_does_not_synchronise(backend, monkeypatch):
    monkeypatch.setattr(blocks, "bi_wkv", functools.partial(bi_wkv, backend=backend))
    unet = latent_unet().cuda()
    patch = make_patch(unet)
    randomise_outputs(patch)
    patch.to("cuda")
    x, t, context, opts = unet_inputs()
    x, t, context = x.cuda(), t.cuda(), context.cuda()
    opts["patches"] = {"output_block_patch": [patch]}

    def sample():
        with torch.no_grad():
            unet(x, t, context, opts)

    def tune():
        unet(x, t, context, opts).square().mean().backward()

    sample(), tune()  # warm-up
    without_syncs(sample)  # raises "called a synchronizing CUDA operation" at the culprit
    without_syncs(tune)
