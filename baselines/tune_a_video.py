"""Tune-A-Video (Wu et al., ICCV 2023) as ComfyUI patches: the peer baseline of the benchmarks.

Tune-A-Video changes SD's UNet only inside its transformer blocks:
- sparse-causal attn1: frame i's keys and values are frame 0's and frame i-1's tokens; frame 0
  takes its own twice (`former_frame_index[0] = 0`), which is plain self-attention;
- a temporal attention (`attn_temp`) per block: LayerNorm, multi-head attention across the
  frames at each position (no position encoding), zero-initialised output projection, residual;
- trainable: attn1.to_q, attn2.to_q and attn_temp (not norm_temp, frozen at (1, 0)), AdamW at
  lr 3e-5; vrwkv/tuning.py holds the rest of the recipe.

Here these are an attn1 replacement per (block, id, index) and a `middle_patch`, which the
transformer blocks of ComfyUI's UNetModel and of the toy UNet call. Deliberate deviations:
1. The temporal attention runs at `middle_patch`, right after attn1, not after the
   feed-forward: ComfyUI's BasicTransformerBlock (v0.3.64) has no hook there. Same operations
   and cost, another order.
2. attn_temp's output bias is zeroed as well as its weight, so the patched UNet is exactly
   sparse-causal SD at init.
Gradient checkpointing is VRWKV Tune On Video's (each ResBlock and SpatialTransformer), the
granularity of Tune-A-Video's own. Both attentions use the attention function the caller
passes (ComfyUI's optimized_attention in tune_a_video_comfy; PyTorch's SDPA by default).
"""

import torch
from einops import rearrange
from torch import nn

from tools.load_pack import load_pack

load_pack()
from vrwkv_editor.vrwkv.frame_attention import SparseCausalAttention, sdpa, transformer_blocks, with_attn1  # noqa: E402
from vrwkv_editor.vrwkv.patch import ModulePatch, frames_per_video  # noqa: E402

QUERY_PROJECTIONS = ("attn1.to_q", "attn2.to_q")


class TemporalAttention(nn.Module):
    """Tune-A-Video's attn_temp with its norm_temp: residual self-attention across frames."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = nn.LayerNorm(dim).requires_grad_(False)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x, frames: int, attention=sdpa):
        """x: the block's residual stream, (videos * frames, tokens, dim). The branch runs in
        the module's dtype, the residual sum in x's."""
        seq = rearrange(x, "(v f) n c -> (v n) f c", f=frames)
        h = self.norm(seq.to(self.to_out.weight.dtype))
        out = self.to_out(attention(self.to_q(h), self.to_k(h), self.to_v(h), self.heads))
        return rearrange(seq + out.to(seq.dtype), "(v n) f c -> (v f) n c", n=x.shape[1])


def block_key_name(key) -> str:
    return "{}_{}_{}".format(*key)


class TemporalAttentions(ModulePatch):
    """middle_patch(x, extra_options) -> x: the temporal attention of the calling block."""

    def __init__(self, shapes: dict, attention=sdpa):
        self.module = nn.ModuleDict({block_key_name(k): TemporalAttention(*s) for k, s in shapes.items()})
        self.attention = attention

    def __call__(self, x, extra_options):
        self.to(x.device)          # no-op once loaded; covers offload modes that skip model_patches_to
        layer = self.module[block_key_name((*extra_options["block"], extra_options["block_index"]))]
        return layer(x, frames_per_video(x.shape[0], extra_options), self.attention)


class TuneAVideo:
    """Tune-A-Video's changes to one UNet: its patches and the trainable temporal attentions."""

    def __init__(self, unet: nn.Module, attention=sdpa):
        blocks = transformer_blocks(unet)
        self.keys = sorted(blocks)
        self.sparse_causal = SparseCausalAttention(attention)
        self.temporal = TemporalAttentions(
            {k: (b.attn1.to_q.in_features, b.n_heads, b.d_head) for k, b in blocks.items()}, attention)

    def transformer_options(self, options: dict | None = None) -> dict:
        """`options` plus the patches, as ComfyUI's ModelPatcher would hand them to the UNet
        (for UNets called without ComfyUI)."""
        options = with_attn1(options or {}, self.keys, self.sparse_causal)
        patches = dict(options.get("patches", {}))
        patches["middle_patch"] = patches.get("middle_patch", []) + [self.temporal]
        return {**options, "patches": patches}

    def apply(self, model):
        """A clone of the ComfyUI ModelPatcher `model` carrying the patches."""
        model = model.clone()
        for key in self.keys:
            model.set_model_attn1_replace(self.sparse_causal, *key)
        model.set_model_patch(self.temporal, "middle_patch")
        return model

    def parameters(self) -> list:
        """The temporal attentions' trainable parameters (their norms stay frozen)."""
        return [p for p in self.temporal.module.parameters() if p.requires_grad]


def tune_a_video(unet: nn.Module, attention=sdpa):
    """(TuneAVideo, trainable parameters) for a plain nn.Module UNet (the toy UNet): the
    parameters are the temporal attentions' and the UNet's own attn1/attn2 to_q, trained in
    place (pass a copy to keep the original); every other UNet weight is frozen."""
    tav = TuneAVideo(unet, attention)
    unet.requires_grad_(False)
    queries = [p for name, m in unet.named_modules() if name.endswith(QUERY_PROJECTIONS) for p in m.parameters()]
    for p in queries:
        p.requires_grad_(True)
    return tav, queries + tav.parameters()


def query_trainer(model, gradient_checkpointing: bool = True):
    """(trainer, deltas): a clone of the ComfyUI ModelPatcher `model` whose attn1/attn2 to_q
    are wrapped in trainable deltas (VRWKV Tune On Video's QueryDelta) and, if asked, with
    that node's gradient checkpointing (every ResBlock and SpatialTransformer recomputed)."""
    import comfy.utils
    from vrwkv_editor.nodes.trainer import QueryDelta, checkpoint_patches, query_weight_keys

    trainer = model.clone()
    unet = trainer.get_model_object("diffusion_model")
    deltas = []
    for key in query_weight_keys(unet):
        wrapper = QueryDelta(comfy.utils.get_attr(trainer.model, key))
        trainer.add_weight_wrapper(key, wrapper)
        deltas.append(wrapper.delta)
    if gradient_checkpointing:
        for key, fn in checkpoint_patches(unet).items():
            trainer.add_object_patch(key, fn)
    return trainer, deltas


def tune_a_video_comfy(model, gradient_checkpointing: bool = True):
    """(tav, trainer, trainable parameters) for a ComfyUI ModelPatcher holding an SD1.5
    UNet: `trainer` (see query_trainer) carries Tune-A-Video's patches; the parameters are
    its trainable set, query deltas first."""
    import comfy.ldm.modules.attention

    tav = TuneAVideo(model.get_model_object("diffusion_model"), comfy.ldm.modules.attention.optimized_attention)
    trainer, deltas = query_trainer(tav.apply(model), gradient_checkpointing)
    return tav, trainer, deltas + tav.parameters()


def tune_in_comfy(trainer, params, samples, conditioning, steps: int, seed: int = 0, lr: float = 3e-5,
                  dtype=torch.float32) -> list:
    """`steps` steps of VRWKV Tune On Video's loop (its sampler in ComfyUI's guider, the
    pack's AdamW recipe) on `params` of the ModelPatcher `trainer`; returns the losses."""
    import comfy.model_management
    from vrwkv_editor.nodes.trainer import TuneSampler, run_tuning
    from vrwkv_editor.vrwkv.tuning import TuneSettings

    with torch.inference_mode(False):
        comfy.model_management.load_models_gpu([trainer], memory_required=1e20, force_full_load=True)
        sampler = TuneSampler(params, TuneSettings(steps=steps, lr=lr, seed=seed), dtype, lambda step, losses: None)
        run_tuning(trainer, sampler, samples, conditioning, seed)
    return sampler.losses
