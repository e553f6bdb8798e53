"""The one owner of where the VRWKV patch sits in ComfyUI's transformer options."""

from toyworld.unet import latent_unet
from vrwkv_editor.vrwkv.config import BlockConfig
from vrwkv_editor.vrwkv.layout import block_spec, unet_layout
from vrwkv_editor.vrwkv.patch import VRWKVBlocks, VRWKVPatch, find_patch, replace_patch, with_patch


def make():
    return VRWKVPatch(VRWKVBlocks(block_spec(unet_layout(latent_unet()), BlockConfig("mid"))))


def test_find_replace_and_register_without_touching_the_input():
    other, ours, new = (lambda h, hsp, o: (h, hsp)), make(), make()
    options = {"cond_or_uncond": [0], "patches": {"output_block_patch": [other]}}
    assert find_patch(options) is None and find_patch({}) is None
    patched = with_patch(options, ours)
    assert options["patches"]["output_block_patch"] == [other]              # the input options unchanged
    assert patched["patches"]["output_block_patch"] == [other, ours] and find_patch(patched) is ours
    replace_patch(patched, ours, new)
    assert patched["patches"]["output_block_patch"] == [other, new] and find_patch(patched) is new
