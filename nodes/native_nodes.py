"""Nodes over ComfyUI's own MODEL (the native path): training a motion embedding through a Wan MODEL from core's
loaders, applying one to it, and the reference's inverted start as the NOISE of core's SamplerCustomAdvanced."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..motion_core.defaults import field_default
from ..motion_core.embedding import MotionEmbedding, resample_latent, resolve_mode
from ..motion_core.errors import InvalidSettingError
from ..motion_core.families.wan import WanFamily
from ..motion_core.families.wan_native import WanBlockMotion
from ..motion_core.loss_plot import render_loss_curve
from ..motion_core.native_training import train_foreign_wan
from ..motion_core.safe_paths import unique_output_path
from ..motion_core.sampling import AppliedMotion, SamplingConfig, blend_noise_prior
from ..motion_core.training import TrainingConfig
from . import comfy_bridge
from .auto_widgets import AUTO_LAYERS
from .embedding_facts import embedding_facts
from .embedding_nodes import ApplyMotionEmbedding
from .handles import CATEGORY, EMBEDDING_TYPE, MODEL_TYPE, MotionModel
from .native_wan import patch_wan_model, sigma_window
from .native_wan_training import comfy_wan, conditioning_tensor, reference_latent
from .training_nodes import TrainMotionEmbedding, step_reporter

logger = logging.getLogger(__name__)
# Stored as the embedding's prompt: the native node gets CONDITIONING, not the prompt's text.
NATIVE_PROMPT_NOTE = "(CONDITIONING from the graph)"


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
        types = ApplyMotionEmbedding.INPUT_TYPES()
        shared, window = types["required"], types["optional"]
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan 2.1/2.2 model from Load Diffusion Model (the one the embedding was trained on, or one of the same architecture)."}),
                "motion_embedding": (EMBEDDING_TYPE, {"tooltip": "A motion embedding trained on a Wan model."}),
                # the same widgets as Apply Motion Embedding (one source for their range, default and choices)
                "strength": ("FLOAT", {**shared["strength"][1], "tooltip": "Scales the embeddings (1: as trained; 0: the MODEL unchanged)."}),
                "mode": shared["mode"],
            },
            # optional, so that workflows saved before these widgets existed still load and queue unchanged
            "optional": {
                "start_percent": ("FLOAT", {**window["start_percent"][1], "tooltip": "The embeddings act from this point of the sampling on, as ComfyUI's ControlNet start percent (0: from the first step)."}),
                "end_percent": ("FLOAT", {**window["end_percent"][1], "tooltip": "The embeddings act up to this point of the sampling, as ComfyUI's ControlNet end percent. Motion and layout are set early; ending earlier leaves the late steps to the prompt. 1: to the last step."}),
            },
        }

    def apply(self, model, motion_embedding: MotionEmbedding, strength: float, mode: str,
              start_percent: float = field_default(AppliedMotion, "start_percent"),
              end_percent: float = field_default(AppliedMotion, "end_percent")):
        if float(strength) == 0.0:
            return (model,)
        AppliedMotion(motion_embedding, float(strength), mode, float(start_percent), float(end_percent)).validate()
        mode = resolve_mode(mode, motion_embedding.info)
        motion = WanBlockMotion(motion_embedding, mode, float(strength))
        motion.sigma_window = sigma_window(model, float(start_percent), float(end_percent))
        patched = patch_wan_model(model, motion)
        logger.info("Motion embedding applied natively (mode %s, strength %g, sigma window %s).", mode, float(strength),
                    motion.sigma_window or "all")
        return (patched,)


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


def _training_default(name: str) -> Any:
    return field_default(TrainingConfig, name)


class TrainMotionEmbeddingNative:
    DESCRIPTION = (
        "Learns motion embeddings from a reference clip through ComfyUI's own Wan MODEL (Load Diffusion Model), with the "
        "model frozen. The reference comes in as a LATENT (VAE Encode of the clip's frames), the prompt as CONDITIONING "
        "(CLIP Text Encode). Saved to models/motion_embeddings in the same format as Train Motion Embedding's, so either "
        "path's Apply node takes it. Cancel stops within a step and keeps what was trained."
    )
    CATEGORY = f"{CATEGORY}/native"
    EXPERIMENTAL = True
    # the outputs of Train Motion Embedding (workflows may swap one training node for the other)
    RETURN_TYPES = TrainMotionEmbedding.RETURN_TYPES
    RETURN_NAMES = TrainMotionEmbedding.RETURN_NAMES
    OUTPUT_TOOLTIPS = TrainMotionEmbedding.OUTPUT_TOOLTIPS
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls):
        wan = WanFamily()
        shared = TrainMotionEmbedding.INPUT_TYPES()["required"]
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan 2.1/2.2 text-to-video model from Load Diffusion Model (its weights stay frozen; LoRAs on it take part)."}),
                "reference": ("LATENT", {"tooltip": "The reference clip: its frames (1 + 4k of them) through VAE Encode with the model's VAE."}),
                "positive": ("CONDITIONING", {"tooltip": "What the reference shows (CLIP Text Encode with the model's text encoder)."}),
                "steps": ("INT", {"default": _training_default("steps"), "min": 1, "max": 100_000, "tooltip": "Optimisation steps."}),
                "learning_rate": ("FLOAT", {"default": _training_default("learning_rate"), "min": 1e-5, "max": 10.0, "step": 0.001, "tooltip": "AdamW learning rate of the embeddings."}),
                "layers": ([AUTO_LAYERS, *wan.layer_sets], {"default": AUTO_LAYERS, "tooltip": "auto: alternate. " + wan.layer_set_help}),
                "loss": (list(wan.losses), {"default": _training_default("loss"), "tooltip": "base: plain flow-matching loss. debiased_temporal: for objects that deform a lot."}),
                # the same widgets as Train Motion Embedding (one source for their range, default and tooltip)
                **{name: shared[name] for name in ("seed", "gradient_checkpointing", "save_every", "filename_prefix")},
            },
            "optional": {
                "inversion_conditioning": ("CONDITIONING", {"tooltip": "The prompt the reference's inversion (the start latent stored with the embedding) runs with: CLIP Text Encode of an empty prompt, as the diffusers path does. Not connected: the positive."}),
                "resume_from": (EMBEDDING_TYPE, {"tooltip": "Continue training this embedding (same model and reference size) up to 'steps'; the optimiser state travels with it, so the result equals an uninterrupted run."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "dynprompt": "DYNPROMPT"},
        }

    def train(self, model, reference, positive, steps: int, learning_rate: float, layers: str, loss: str, seed: int,
              gradient_checkpointing: str, save_every: int, filename_prefix: str, inversion_conditioning=None,
              resume_from: MotionEmbedding | None = None, unique_id: str | None = None, dynprompt: Any = None):
        config = TrainingConfig(prompt=NATIVE_PROMPT_NOTE, steps=steps, learning_rate=learning_rate, loss=loss,
                                layer_set=layers, seed=seed, gradient_checkpointing=gradient_checkpointing, save_every=save_every)
        config.validate()
        path = unique_output_path(comfy_bridge.embedding_save_dir(), filename_prefix, ".safetensors")
        on_step = step_reporter(config.steps, unique_id, dynprompt)
        inversion_progress = comfy_bridge.Progress(config.inversion_steps, unique_id)
        with comfy_bridge.autograd_enabled():
            wan = comfy_wan(model)
            latents = reference_latent(model, reference)
            text = conditioning_tensor(model, positive, "positive")
            inversion_text = text if inversion_conditioning is None else conditioning_tensor(model, inversion_conditioning, "inversion conditioning")
            result = train_foreign_wan(wan, latents, text, inversion_text, config, path, resume_from, on_step,
                                       lambda done, _total: inversion_progress.update(done))
        logger.info("Motion embedding trained through the native MODEL in %s", {k: round(v, 2) for k, v in result.timings.items()})
        facts = embedding_facts(result.embedding, path.name)
        return {"ui": {"motion_embedding": [facts]}, "result": (result.embedding, render_loss_curve(result.losses))}
