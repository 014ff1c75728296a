"""MI_LoadVideoModel: a diffusers text-to-video folder -> MI_MODEL; MI_LoadAnimateDiffModel: an SD1.5 checkpoint and
a motion module -> MI_MODEL."""

from __future__ import annotations

from ..motion_core.attention import ATTENTION_CHOICES
from ..motion_core.defaults import parameter_default
from ..motion_core.errors import ModelLoadError
from ..motion_core.model_loading import PRECISION_CHOICES, load_animatediff_files_model, load_video_model
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


class LoadAnimateDiffModel:
    DESCRIPTION = (
        "Loads AnimateDiff from the files AnimateDiff-Evolved users have: an SD1.5 checkpoint (models/checkpoints) and "
        "a motion module (models/animatediff_models: mm_sd_v15_v2, v3_sd15_mm, ...). Converted in memory with the "
        "pack's SD1.5 configs and ComfyUI's own CLIP tokenizer; nothing is downloaded or written."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The AnimateDiff model, to train on or to apply motion embeddings to.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        checkpoints = list(comfy_bridge.list_model_files("checkpoints")) or ["(no checkpoint found)"]
        modules = list(comfy_bridge.list_model_files(comfy_bridge.MOTION_MODULE_FOLDER)) or ["(no motion module found)"]
        video = LoadVideoModel.INPUT_TYPES()["required"]
        return {
            "required": {
                "checkpoint": (checkpoints, {"tooltip": "An SD1.5 checkpoint (UNet, VAE and CLIP in one file) from models/checkpoints."}),
                "motion_module": (modules, {"tooltip": "An SD1.5 AnimateDiff motion module from models/animatediff_models (v1, v2 or v3)."}),
                "precision": video["precision"],
                "attention": video["attention"],
            }
        }

    def load(self, checkpoint: str, motion_module: str, precision: str, attention: str):
        checkpoint_path = comfy_bridge.list_model_files("checkpoints").get(checkpoint)
        module_path = comfy_bridge.list_model_files(comfy_bridge.MOTION_MODULE_FOLDER).get(motion_module)
        if checkpoint_path is None or module_path is None:
            missing = checkpoint if checkpoint_path is None else motion_module
            raise ModelLoadError(
                f"{missing!r} was not found. Put SD1.5 checkpoints in models/checkpoints and motion modules in "
                "models/animatediff_models, then refresh."
            )
        with comfy_bridge.autograd_enabled():
            loaded = load_animatediff_files_model(checkpoint_path, module_path, comfy_bridge.sd1_tokenizer_dir(),
                                                  precision, attention, comfy_bridge.torch_device())
        return (MotionModel(loaded),)
