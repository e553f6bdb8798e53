"""Run under ComfyUI's Python by test_comfy_runtime.py: the pack's nodes on ComfyUI's own
ModelPatcher, guider, samplers and ControlNet (random shallow SD1.5, 8 frames of 8x8
latents), called as ComfyUI's executor calls them (under torch.inference_mode). Prints one
JSON line of findings.

    COMFYUI_PATH=... COMFYUI_PYTHON comfy_runtime_check.py CONTROLNET_PATH
"""

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.comfy_model import import_comfy, load_pack_in_comfy, random_sd15  # noqa: E402

FRAMES = 8


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(FRAMES, 4, 8, 8, generator=g)
    pos, neg = ([[torch.randn(1, 77, 768, generator=g), {}]] for _ in range(2))
    return latent, pos, neg


def act(patch, seed=1):
    """Output projections and mu away from their identity init (as tuning moves them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in patch.blocks.named_parameters():
            if name.endswith(("output.weight", "output.1.weight")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif name.rsplit(".", 1)[-1].startswith("mu"):
                p.copy_(torch.rand(p.shape, generator=g))


def half_precision_sampling(pack):
    """A bfloat16 UNet sampled with half-precision blocks built by VRWKV Patch Model under
    inference mode, then after other weights are loaded into those blocks there, and with
    blocks built from those weights (apply_vrwkv, as a weights file is loaded); the dtypes
    the blocks computed in."""
    import comfy.sample
    node, common = pack.nodes.patch_model, pack.nodes.common
    base = random_sd15("shallow", dtype=torch.bfloat16)
    latent, pos, neg = inputs()
    dtypes = set()

    def sample(model):
        for block in common.find_patch(model).blocks.blocks.values():
            block.spatial_mix.register_forward_hook(lambda m, args, out: dtypes.add(str(out.dtype)))
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(3))
        return comfy.sample.sample(model, noise, 2, 5.0, "euler", "normal", pos, neg, latent, denoise=1.0, seed=1)
    with torch.inference_mode():
        (model,) = node.VRWKVPatchModel().patch(base, "skip+mid", "all", half_precision_sampling=True)
        patch = common.find_patch(model)
        act(patch)
        built = sample(model)
        act(patch, seed=2)                                      # other weights, loaded in place
        reloaded = sample(model)
        state = {k: v.clone() for k, v in patch.blocks.state_dict().items()}
        loaded = sample(node.apply_vrwkv(base, dict(patch.blocks.spec), state))
    return {"built": built.tolist(), "reloaded": reloaded.tolist(), "loaded": loaded.tolist(),
            "dtypes": sorted(dtypes)}


def spied_default_patch(pack, base, record):
    """VRWKV Patch Model's default patch on `base` (model, patch); each model call's transformer
    options and end_percent verdict go to `record(options, skipped)`."""
    (model,) = pack.nodes.patch_model.VRWKVPatchModel().patch(base, "skip+mid", "all")
    patch = pack.nodes.common.find_patch(model)
    ended = patch.ended

    def spy(options):
        skipped = ended(options)
        record(options, skipped)
        return skipped
    patch.ended = spy
    return model, patch


def sampling_schedule(pack):
    """VRWKV Patch Model's default end_percent in a sampling run: the sigma where the blocks
    stop (as the patch holds it, ComfyUI's percent_to_sigma, and vrwkv.ddim's on the model's
    sigma table), and each model call's sigma with whether it skipped the blocks."""
    import importlib

    import comfy.sample
    node = pack.nodes.patch_model
    ddim = importlib.import_module(pack.__name__ + ".vrwkv.ddim")
    base = random_sd15("shallow")
    latent, pos, neg = inputs()
    calls = []
    with torch.inference_mode():
        model, patch = spied_default_patch(pack, base, lambda options, skipped: calls.append(
            [float(options["sigmas"].max()), skipped]))
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(3))
        comfy.sample.sample(model, noise, 6, 5.0, "euler", "normal", pos, neg, latent, denoise=1.0, seed=1)
        sampling = model.get_model_object("model_sampling")
        return {"end_percent": node.DEFAULT.end_percent, "end_sigma": patch.end_sigmas[0],
                "comfy": sampling.percent_to_sigma(node.DEFAULT.end_percent),
                "ours": ddim.percent_to_sigma(sampling.sigmas, node.DEFAULT.end_percent), "calls": calls}


def edit_marks(pack):
    """Which model calls tell the blocks they are part of an edit (ddim.EDIT_KEY), each as
    [marked, sigma, skipped the blocks]: VRWKV DDIM Inversion's, VRWKV KSampler (DDIM)'s from its
    inverted_latent and from fresh noise, and SamplerCustom's with VRWKV DDIM sampler's edit on
    and off; the sigmas where the default patch stops the blocks (as it holds them and as
    ComfyUI's percent_to_sigma gives them); whether the MODEL's own options gained the mark."""
    import importlib

    import comfy.sample
    import comfy.samplers
    ddim_nodes = pack.nodes.ddim
    key = importlib.import_module(pack.__name__ + ".vrwkv.ddim").EDIT_KEY
    base = random_sd15("shallow")
    latent, pos, neg = inputs()
    marks = []
    with torch.inference_mode():
        model, patch = spied_default_patch(pack, base, lambda options, skipped: marks.append(
            [bool(options.get(key)), float(options["sigmas"].max()), skipped]))

        def run(call):
            marks.clear()
            call()
            return list(marks)
        inverted = {}

        def invert():
            inverted["latent"] = ddim_nodes.VRWKVDDIMInversion().invert(model, {"samples": latent}, pos, 4, 1.0, 0,
                                                                        "invert", "unused")["result"][0]
        ksampler = ddim_nodes.VRWKVKSampler()

        def custom(edit):
            (sampler,) = ddim_nodes.VRWKVSamplerDDIM().get_sampler(0.0, edit)
            sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 3)
            comfy.sample.sample_custom(model, torch.zeros_like(latent), 5.0, sampler, sigmas, pos, neg, latent, seed=1)
        found = {"inversion": run(invert),
                 "ksampler_from_inversion": run(lambda: ksampler.sample(model, 1, 4, 5.0, pos, neg, {"samples": latent},
                                                                        1.0, 0.0, inverted["latent"])),
                 "ksampler_from_noise": run(lambda: ksampler.sample(model, 1, 4, 5.0, pos, neg, {"samples": latent},
                                                                    1.0, 0.0)),
                 "sampler_custom_edit": run(lambda: custom(True)), "sampler_custom": run(lambda: custom(False))}
    sampling = model.get_model_object("model_sampling")
    default = pack.nodes.patch_model.DEFAULT
    return {**found, "model_options_marked": key in model.model_options.get("transformer_options", {}),
            "end_sigmas": list(patch.end_sigmas),
            "comfy": [sampling.percent_to_sigma(default.end(edit)) for edit in (False, True)]}


def windowed_runs(pack):
    """Two sampling runs through one cached guider with one sigmas tensor (as a cached
    GUIDER and SIGMAS give SamplerCustomAdvanced), the windowed MODEL cloned once more
    downstream; a fresh windowed MODEL's run; per-window sigmas and batches with CFG."""
    import comfy.samplers
    from comfy.patcher_extension import WrappersMP
    node, common, windows = pack.nodes.patch_model, pack.nodes.common, pack.nodes.windows
    base = random_sd15("shallow")
    latent, pos, neg = inputs()
    with torch.inference_mode():
        (patched,) = node.VRWKVPatchModel().patch(base, "skip+mid", "all")
        act(common.find_patch(patched))
        calls = []

        def spy(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
            """An APPLY_MODEL wrapper inside the windows' own: what one window's call gets."""
            calls.append([x.shape[0], len(transformer_options["cond_or_uncond"]),
                          transformer_options["sigmas"].shape[0]])
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

        def windowed():
            model = windows.VRWKVContextWindows().apply(patched, 4, 1, True)[0].clone()
            model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "spy", spy)
            return model
        model = windowed()
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 2)
        sampler = comfy.samplers.sampler_object("euler")

        def guider(m):
            g = comfy.samplers.CFGGuider(m)
            g.set_conds(pos, neg)
            g.set_cfg(5.0)
            return g

        def noise(seed):
            return torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
        cached = guider(model)
        first = cached.sample(noise(1), latent, sampler, sigmas, seed=1)
        second = cached.sample(noise(2), latent, sampler, sigmas, seed=2)
        fresh = guider(windowed()).sample(noise(2), latent, sampler, sigmas, seed=2)
        [run_wrapper] = model.get_wrappers(WrappersMP.OUTER_SAMPLE, windows.WRAPPER_KEY)
        store = run_wrapper.__self__.store
    return {"first": first.tolist(), "second": second.tolist(), "fresh": fresh.tolist(), "calls": calls,
            "store_empty_after_run": store.empty()}


def controlnet_tuning(pack, controlnet_path):
    """VRWKV Tune On Video with a window of 3 of 8 frames, the source prompt carrying a real
    ControlNet whose hint frame i is the constant i/8 (ControlNetApplyAdvanced's way): the
    hint frames the ControlNet sees at each step; then a re-tune with another window."""
    import comfy.controlnet
    node, tune = pack.nodes.patch_model, pack.nodes.tune
    base = random_sd15("shallow")
    latent, pos, _ = inputs()
    hints = []
    with torch.inference_mode():
        control = comfy.controlnet.load_controlnet(controlnet_path)
        net = control.control_model
        forward = net.forward

        def spy(x, hint, timesteps, context, **kw):
            hints.append([round(float(v) * 8) for v in hint[:, 0, 0, 0]])
            return forward(x=x, hint=hint, timesteps=timesteps, context=context, **kw)
        net.forward = spy
        hint_image = torch.arange(FRAMES, dtype=torch.float32)[:, None, None, None].expand(FRAMES, 64, 64, 3) / 8
        c_net = control.copy().set_cond_hint(hint_image.movedim(-1, 1), 1.0, (0.0, 1.0))
        source = [[pos[0][0], {**pos[0][1], "control": c_net, "control_apply_to_uncond": False}]]
        (patched,) = node.VRWKVPatchModel().patch(base, "skip+mid", "all")
        tuned, _, _ = tune.VRWKVTuneOnVideo().tune(patched, {"samples": latent}, source, 4, 1e-3, 3, "vrwkv", False,
                                                   "auto", window=3)["result"]
        net.forward = forward
        retuned, _, _ = tune.VRWKVTuneOnVideo().tune(tuned, {"samples": latent}, pos, 1, 1e-3, 3, "vrwkv", False,
                                                     "auto", window=0)["result"]
    norm = [pack.nodes.common.find_patch(m).blocks.spec.get("norm_frames") for m in (tuned, retuned)]
    return {"hints": hints, "norm_frames": norm}


def main():
    import_comfy()
    pack = load_pack_in_comfy()
    print(json.dumps({"half": half_precision_sampling(pack), "schedule": sampling_schedule(pack),
                      "edit_marks": edit_marks(pack),
                      "windows": windowed_runs(pack),
                      "controlnet": controlnet_tuning(pack, sys.argv[1])}))


if __name__ == "__main__":
    main()
