"""MI_LoadVideoModel: a diffusers text-to-video folder -> MI_MODEL."""

from __future__ import annotations

from ..motion_core.attention import ATTENTION_CHOICES
from ..motion_core.defaults import parameter_default
from ..motion_core.errors import ModelLoadError
from ..motion_core.model_loading import PRECISION_CHOICES, load_video_model
from . import comfy_bridge
from .handles import CATEGORY, MODEL_TYPE, MotionModel


class LoadVideoModel:
    DESCRIPTION = (
        "Loads a text-to-video model from a diffusers folder in models/diffusers: UNet3D models (ZeroScope, ModelScope "
        "T2V, VideoCrafter2, the bundled toy-world demo) or Wan 2.1/2.2 (WanPipeline folders). The loaded model is "
        "cached between runs."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded video model, to train on or to apply motion embeddings to.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = list(comfy_bridge.list_video_models()) or ["(no diffusers video model found)"]
        return {
            "required": {
                "model": (names, {"tooltip": "A diffusers folder (with model_index.json) in models/diffusers."}),
                "precision": (list(PRECISION_CHOICES), {"default": parameter_default(load_video_model, "precision"), "tooltip": "auto: bf16 on a GPU that has it, else fp16 (trained with loss scaling); fp32 on CPU. The VAE always runs in fp32 and motion embeddings are always kept in fp32."}),
                "attention": (list(ATTENTION_CHOICES), {"default": parameter_default(load_video_model, "attention"), "tooltip": "Kernel for the temporal attention layers. auto: xformers on CUDA when installed, else SDPA; plain matmul on CPU. Wan models always use SDPA."}),
            }
        }

    def load(self, model: str, precision: str, attention: str):
        folder = comfy_bridge.list_video_models().get(model)
        if folder is None:
            raise ModelLoadError(f"Video model {model!r} was not found. Put a diffusers text-to-video folder in models/diffusers and refresh.")
        with comfy_bridge.autograd_enabled():  # weights created under inference mode could not be trained through
            loaded = load_video_model(folder, precision, attention, comfy_bridge.torch_device())
        return (MotionModel(loaded),)
