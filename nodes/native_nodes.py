"""Nodes over ComfyUI's own MODEL (the native path): a motion embedding on a Wan MODEL from core's loaders, and the
reference's inverted start as the NOISE of core's SamplerCustomAdvanced."""

from __future__ import annotations

from typing import Any

import torch

from ..motion_core.defaults import field_default
from ..motion_core.embedding import MotionEmbedding, resample_latent, resolve_mode
from ..motion_core.errors import InvalidSettingError
from ..motion_core.families.wan_native import WanBlockMotion
from ..motion_core.sampling import SamplingConfig, blend_noise_prior
from .embedding_nodes import ApplyMotionEmbedding
from .handles import CATEGORY, EMBEDDING_TYPE, MODEL_TYPE, MotionModel
from .native_wan import patch_wan_model


class ApplyMotionEmbeddingNative:
    DESCRIPTION = (
        "Applies a Wan motion embedding to a MODEL from ComfyUI's own loaders (Load Diffusion Model), for the core "
        "KSampler and the other samplers downstream. Returns a patched clone: the MODEL it gets is never changed, and "
        "LoRAs and attention speed-ups on it keep working."
    )
    CATEGORY = f"{CATEGORY}/native"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        shared = ApplyMotionEmbedding.INPUT_TYPES()["required"]
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan 2.1/2.2 model from Load Diffusion Model (the one the embedding was trained on, or one of the same architecture)."}),
                "motion_embedding": (EMBEDDING_TYPE, {"tooltip": "A motion embedding trained on a Wan model."}),
                # the same widgets as Apply Motion Embedding (one source for their range, default and choices)
                "strength": ("FLOAT", {**shared["strength"][1], "tooltip": "Scales the embeddings (1: as trained; 0: the MODEL unchanged)."}),
                "mode": shared["mode"],
            }
        }

    def apply(self, model, motion_embedding: MotionEmbedding, strength: float, mode: str):
        if float(strength) == 0.0:
            return (model,)
        motion = WanBlockMotion(motion_embedding, resolve_mode(mode, motion_embedding.info), float(strength))
        return (patch_wan_model(model, motion),)


class MotionStartNoise:
    """ComfyUI NOISE (what ``SamplerCustomAdvanced`` takes): the embedding's inverted start blended with seeded noise.

    ``generate_noise({"samples": (B, C, F', h, w), ...})`` returns ``sqrt(p) * inverted + sqrt(1 - p) * noise``,
    the inverted latent ``(C, F'', h', w')`` resampled to the run's latent size, ``noise`` the unit Gaussian that core's
    RandomNoise draws for ``seed`` (same generator and order: float32 on the CPU; a ``batch_index`` is not followed).
    Both are in the model's normalised latent space, where ComfyUI adds noise.
    """

    def __init__(self, inverted: torch.Tensor | None, prior: float, seed: int) -> None:
        self.inverted = inverted
        self.prior = float(prior)
        self.seed = int(seed)

    def generate_noise(self, input_latent: dict[str, Any]) -> torch.Tensor:
        latent = input_latent["samples"]
        if latent.ndim != 5:
            raise InvalidSettingError(
                f"The motion start noise is for video latents (batch, channels, frames, height, width); got shape "
                f"{tuple(latent.shape)}. Use an empty Wan video latent (EmptyHunyuanLatentVideo / Wan22ImageToVideoLatent)."
            )
        noise = torch.randn(latent.shape, dtype=torch.float32, generator=torch.Generator().manual_seed(self.seed))
        if self.inverted is None or self.prior <= 0:
            return noise.to(latent.dtype)
        if latent.shape[1] != self.inverted.shape[0]:
            raise InvalidSettingError(
                f"The motion embedding's start latent has {self.inverted.shape[0]} channels but this latent has "
                f"{latent.shape[1]}: it was made for another VAE."
            )
        inverted = resample_latent(self.inverted, *latent.shape[2:])
        return blend_noise_prior(inverted.float(), noise, self.prior).to(latent.dtype)


class MotionStartNoiseNode:
    DESCRIPTION = (
        "The reference's inverted start (stored with the motion embedding) blended with seeded noise, as the NOISE input "
        "of core SamplerCustomAdvanced. On flow models such as Wan the first step is at sigma 1, where KSampler gives a "
        "LATENT input no weight, so the start has to come in as the noise. Noise prior 0 gives core RandomNoise exactly."
    )
    CATEGORY = f"{CATEGORY}/native"
    RETURN_TYPES = ("NOISE",)
    RETURN_NAMES = ("noise",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion_embedding": (EMBEDDING_TYPE, {"tooltip": "A motion embedding that stores its inverted start latent (trained with inversion steps)."}),
                "noise_prior": ("FLOAT", {"default": field_default(SamplingConfig, "noise_prior"), "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Share of the reference's inverted start in the starting noise (0: plain noise)."}),
                "noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Seed of the noise part (the same noise core RandomNoise draws)."}),
            }
        }

    def make(self, motion_embedding: MotionEmbedding, noise_prior: float, noise_seed: int):
        inverted = motion_embedding.inverted_latent
        if inverted is None and noise_prior > 0:
            raise InvalidSettingError(
                "This motion embedding stores no inverted start latent (it was trained with 0 inversion steps); "
                "set noise prior to 0 or retrain with inversion steps."
            )
        return (MotionStartNoise(None if inverted is None else inverted.float().cpu(), float(noise_prior), int(noise_seed)),)


class EncodePromptWithModel:
    DESCRIPTION = (
        "Encodes a prompt with the text encoder of a model loaded by Load Video Model, as CONDITIONING for core "
        "samplers. For models whose text encoder ComfyUI's CLIP loaders cannot read (the pack's toy-world models); a "
        "real Wan's UMT5 goes through core Load CLIP + CLIP Text Encode instead."
    )
    CATEGORY = f"{CATEGORY}/native"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "A model from Load Video Model (its text encoder and tokenizer are used)."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The prompt to encode."}),
            }
        }

    def encode(self, model: MotionModel, prompt: str):
        video_model = model.model
        with torch.no_grad():
            cond = video_model.family.encode_prompt(video_model, prompt).float().cpu()  # (1, L, D)
        return ([[cond, {}]],)
