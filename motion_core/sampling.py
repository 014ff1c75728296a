"""Generate a clip with (or without) motion embeddings applied.

The start latent is ``sqrt(p) * inverted + sqrt(1 - p) * noise`` with noise prior ``p`` when the embedding
carries the DDIM-inverted reference latent, else pure noise. Classifier-free guidance batches the negative
and positive prompts together; the value embedding is tiled over that batch by the processor.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .diffusion import decode_latents, encode_prompt
from .embedding import MotionEmbedding, check_fits, prepare_for_sampling
from .errors import InvalidSettingError
from .model_loading import VideoModel
from .patching import build_processors, installed_processors
from .temporal_layers import find_temporal_blocks

logger = logging.getLogger(__name__)

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm++_2m": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}

PreviewCallback = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class AppliedMotion:
    """An embedding with the inference settings it is applied with (what ``MI_ApplyMotionEmbedding`` makes)."""

    embedding: MotionEmbedding
    strength: float = 1.0
    mode: str = "object"


@dataclass
class SamplingConfig:
    """Settings of one generation (defaults: the paper's ZeroScope settings)."""

    prompt: str
    negative_prompt: str = ""
    width: int = 576
    height: int = 320
    frames: int = 24
    steps: int = 30
    guidance_scale: float = 12.0
    seed: int = 0
    scheduler: str = "ddim"
    noise_prior: float = 0.5

    def validate(self, model: VideoModel) -> None:
        if self.steps < 1:
            raise InvalidSettingError(f"Sampling steps must be at least 1, got {self.steps}.")
        if self.frames < 1:
            raise InvalidSettingError(f"Frame count must be at least 1, got {self.frames}.")
        if self.scheduler not in SCHEDULERS:
            raise InvalidSettingError(f"Unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}.")
        if not (0.0 <= self.noise_prior <= 1.0):
            raise InvalidSettingError(f"Noise prior must be between 0 and 1, got {self.noise_prior}.")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise InvalidSettingError(f"Guidance scale must be zero or positive, got {self.guidance_scale}.")
        multiple = model.size_multiple
        if self.width % multiple or self.height % multiple or self.width < multiple or self.height < multiple:
            raise InvalidSettingError(f"Width and height must be positive multiples of {multiple} for {model.name}; got {self.width}x{self.height}.")


def make_scheduler(model: VideoModel, name: str):
    """A fresh diffusers scheduler of kind ``name`` built from the model's scheduler config."""
    import diffusers

    return getattr(diffusers, SCHEDULERS[name]).from_config(model.scheduler.config)


def _start_latent(
    model: VideoModel, config: SamplingConfig, shape: tuple[int, ...], inverted: torch.Tensor | None, scheduler
) -> torch.Tensor:
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(config.seed))
    if inverted is not None and config.noise_prior > 0:
        p = config.noise_prior
        noise = math.sqrt(p) * inverted.unsqueeze(0).float().cpu() + math.sqrt(1.0 - p) * noise
    elif config.noise_prior > 0 and inverted is None:
        logger.info("The embedding carries no inverted latent (interrupted training?); starting from pure noise.")
    return (noise * scheduler.init_noise_sigma).to(model.device)


@torch.no_grad()
def sample_video(
    model: VideoModel,
    config: SamplingConfig,
    motion: AppliedMotion | None = None,
    on_step: PreviewCallback | None = None,
) -> torch.Tensor:
    """Generate ``config.frames`` frames; returns ``(F, H, W, 3)`` in 0..1 on the CPU.

    Args:
        model: loaded model; it is patched only inside this call and restored even on Cancel or error.
        config: generation settings.
        motion: embedding to apply, or ``None`` for the base model.
        on_step: ``(step, total, predicted_clean_latent (1, C, F, h, w))`` after each step; raise to cancel.
    """
    config.validate(model)
    latent_h, latent_w = model.latent_size(config.width, config.height)
    shape = (1, model.latent_channels, config.frames, latent_h, latent_w)
    scheduler = make_scheduler(model, config.scheduler)
    scheduler.set_timesteps(config.steps, device=model.device)
    processors = build_processors(model.unet, model.kernel)
    inverted = None
    if motion is not None:
        embedding = motion.embedding
        check_fits(embedding.info, model.family, find_temporal_blocks(model.unet), model.name, architecture=model.identity.get("architecture"))
        prepared = prepare_for_sampling(embedding.to(model.device), config.frames, latent_h, latent_w, motion.mode, motion.strength)
        processors = build_processors(model.unet, model.kernel, embedding.info.blocks, prepared.query_key, prepared.value)
        inverted = prepared.inverted_latent
    guided = config.guidance_scale != 1.0
    positive = encode_prompt(model, config.prompt)
    text = torch.cat([encode_prompt(model, config.negative_prompt), positive]) if guided else positive
    latents = _start_latent(model, config, shape, inverted, scheduler)
    step_kwargs: dict[str, object] = {}
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs["generator"] = torch.Generator(device=model.device).manual_seed(config.seed + 1)
    with model.lock, installed_processors(model.unet, processors):
        for index, timestep in enumerate(scheduler.timesteps):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, timestep)
            output = model.unet(model_input.to(model.dtype), timestep, encoder_hidden_states=text).sample.float()
            if guided:
                uncond, cond = output.chunk(2)
                output = uncond + config.guidance_scale * (cond - uncond)
            result = scheduler.step(output, timestep, latents, **step_kwargs)
            latents = result.prev_sample
            if on_step is not None:
                clean = getattr(result, "pred_original_sample", None)
                on_step(index + 1, len(scheduler.timesteps), latents if clean is None else clean)
    return decode_latents(model, latents)
