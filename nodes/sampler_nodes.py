"""MI_MotionSampler: text-to-video generation with the applied motion embedding."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..motion_core.defaults import field_default
from ..motion_core.diffusion import decode_latents
from ..motion_core.recommended_settings import resolve_sampling_recommended
from ..motion_core.sampling import SCHEDULERS, SamplingConfig, sample_video
from . import comfy_bridge
from .auto_widgets import AUTO, AUTO_CFG, auto_tooltip, given, recommended_phrase
from .handles import CATEGORY, MODEL_TYPE, MotionModel

PREVIEW_MAX_SIZE = 512


def _default(name: str):
    return field_default(SamplingConfig, name)


class MotionSampler:
    DESCRIPTION = (
        "Generates a clip from a prompt with the motion embedding applied to the model (or the plain model). "
        "Output frames go to core Create Video / Save Video, Save Animated WEBP or Video Combine."
    )
    CATEGORY = f"{CATEGORY}/sampling"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Generated frames [F,H,W,3] in 0..1.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "A video model, usually from Apply Motion Embedding."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the new clip should show."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": _default("negative_prompt"), "tooltip": "What to avoid."}),
                "width": ("INT", {"default": AUTO, "min": AUTO, "max": 4096, "step": 8, "tooltip": auto_tooltip("Width in pixels (rounded to a multiple of the model's size factor).", "sample", "width")}),
                "height": ("INT", {"default": AUTO, "min": AUTO, "max": 4096, "step": 8, "tooltip": auto_tooltip("Height in pixels.", "sample", "height")}),
                "frames": ("INT", {"default": AUTO, "min": AUTO, "max": 1024, "tooltip": f"Frame count; the embedding is resampled if it was trained with another count. 0 = the applied embedding's training frame count (keeps its timing); with no embedding, {recommended_phrase('sample', 'frames')}."}),
                "steps": ("INT", {"default": AUTO, "min": AUTO, "max": 1000, "tooltip": auto_tooltip("Denoising steps.", "sample", "steps")}),
                "cfg": ("FLOAT", {"default": AUTO_CFG, "min": AUTO_CFG, "max": 50.0, "step": 0.1, "tooltip": auto_tooltip("Classifier-free guidance scale (1 disables guidance, 0 is unconditional).", "sample", "cfg", AUTO_CFG)}),
                "seed": ("INT", {"default": _default("seed"), "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Noise seed."}),
                "scheduler": (list(SCHEDULERS), {"default": _default("scheduler"), "tooltip": "Sampler. auto: the model family's default (DDIM, as the paper, on UNet3D models; Euler on Wan)."}),
                "noise_prior": ("FLOAT", {"default": _default("noise_prior"), "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Blend of the reference's DDIM-inverted latent into the start noise (0: pure noise)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sample(self, model: MotionModel, prompt: str, negative_prompt: str, width: int, height: int, frames: int, steps: int,
               cfg: float, seed: int, scheduler: str, noise_prior: float, unique_id: str | None = None):
        video_model = model.model
        wanted = {"width": given(width, AUTO), "height": given(height, AUTO), "frames": given(frames, AUTO),
                  "steps": given(steps, AUTO), "cfg": given(cfg, AUTO_CFG)}
        embedding_frames = model.motion.embedding.info.train_frames if model.motion is not None else None
        chosen = resolve_sampling_recommended(video_model.recommended, wanted, video_model.name, embedding_frames)
        config = SamplingConfig(prompt, negative_prompt, chosen["width"], chosen["height"], chosen["frames"], chosen["steps"],
                                chosen["cfg"], seed, scheduler, noise_prior)
        progress = comfy_bridge.Progress(config.steps, unique_id)

        def on_step(done: int, total: int, clean_latent) -> None:
            preview = None
            if comfy_bridge.in_comfyui():
                middle = clean_latent.shape[2] // 2
                frame = decode_latents(video_model, clean_latent[:, :, middle : middle + 1])[0]
                preview = ("JPEG", Image.fromarray((frame.numpy() * 255).astype(np.uint8)), PREVIEW_MAX_SIZE)
            progress.update(done, preview)

        return (sample_video(video_model, config, model.motion, on_step),)
