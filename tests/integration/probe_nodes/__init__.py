"""Test-only ComfyUI nodes for the integration tier (installed in its servers, never shipped
with the pack): what other packs do to a MODEL, in a form whose effect shows in the samples."""


class ProbeUnetFunctionWrapper:
    """Sets ComfyUI's single-slot UNet function wrapper (set_model_unet_function_wrapper),
    replacing any wrapper there as many packs do, to one that scales the model's output."""
    CATEGORY = "testing"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "scale": ("FLOAT", {"default": 0.9, "min": 0.0, "max": 2.0})}}

    def apply(self, model, scale):
        def wrapper(apply_model, args):
            return apply_model(args["input"], args["timestep"], **args["c"]) * scale

        wrapped = model.clone()
        wrapped.set_model_unet_function_wrapper(wrapper)
        return (wrapped,)


NODE_CLASS_MAPPINGS = {"ProbeUnetFunctionWrapper": ProbeUnetFunctionWrapper}
