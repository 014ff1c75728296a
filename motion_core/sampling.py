"""Generate a clip with (or without) motion embeddings applied.

The start latent is ``sqrt(p) * inverted + sqrt(1 - p) * noise`` with noise prior ``p`` when the embedding
carries the inverted reference latent, else pure noise. Both are at the sampler's start (DDIM's noisiest
timestep on UNet3D, sigma = 1 on Wan's flow), so the variance-keeping blend means the same for every family.
The family does the rest: its samplers, its denoiser call, its frame rounding (Wan: 1 + 4k frames). Classifier-free guidance batches the negative
and positive prompts together; the value embedding is tiled over that batch by the processor. Strength 0 is
the plain model (no embeddings, no inverted start). A size that cannot fit in memory is refused before any
work, and a run whose latents or frames turn NaN or infinite ends in :class:`SamplingError`, not a black clip.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .diffusion import decode_latents, encode_prompt
from .embedding import EMBEDDING_DEFAULT_MODE, MotionEmbedding, check_fits, prepare_for_sampling, resolve_mode
from .errors import InvalidSettingError, SamplingError
from .families import FAMILY_DEFAULT, SCHEDULER_CHOICES
from .families.base import SEED_LIMIT, Sampler
from .memory_estimate import check_sampling_fits
from .model_loading import VideoModel
from .patching import installed_processors

logger = logging.getLogger(__name__)

# Sampler names over all families, "auto" (the family's default: ddim on UNet3D, euler on Wan) first; each family
# accepts its own (ModelFamily.schedulers).
SCHEDULERS: tuple[str, ...] = SCHEDULER_CHOICES

PreviewCallback = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class AppliedMotion:
    """An embedding with the inference settings it is applied with (what ``MI_ApplyMotionEmbedding`` makes).

    Attributes:
        strength: scales both embeddings; 0 is the plain model (the inverted start is dropped too).
        mode: ``object`` / ``camera`` / ``raw``, or :data:`EMBEDDING_DEFAULT_MODE` for the embedding's own.
        start_percent, end_percent: the share of the sampling steps the embeddings act on, as ComfyUI's ControlNet
            start/end percent: step ``i`` of ``N`` uses them when ``start <= i / N < end`` (0 and 1: every step). The
            inverted start latent does not depend on them. The default (the first half) leaves the late steps to the
            prompt: on the toy-world UNet3D, AnimateDiff and Latte it keeps the prompt's look in 98-100 % of clips
            where every step gave 44-79 %, at motion fidelity 0.97 / 0.97 / 0.91 (of the windows measured on all three,
            the only one that meets issue 13's targets on each; the first 75 % gave text 0.94 on Latte; ``bench_motion_transfer.py``,
            README, Measurements).
    """

    embedding: MotionEmbedding
    strength: float = 1.0
    mode: str = EMBEDDING_DEFAULT_MODE
    start_percent: float = 0.0
    end_percent: float = 0.5

    @property
    def resolved_mode(self) -> str:
        """The mode applied: :attr:`mode`, or the embedding's default for :data:`EMBEDDING_DEFAULT_MODE`."""
        return resolve_mode(self.mode, self.embedding.info)

    def validate(self) -> None:
        """Refuse a step window that is empty or outside 0..1."""
        if not (0.0 <= self.start_percent < self.end_percent <= 1.0):
            raise InvalidSettingError(
                f"The embedding's step window must satisfy 0 <= start_percent < end_percent <= 1; got start "
                f"{self.start_percent:g}, end {self.end_percent:g}. Use 0 and 1 to apply it on every step."
            )

    def acts_at(self, step: int, total: int) -> bool:
        """Whether the embeddings act on step ``step`` (0-based) of ``total``."""
        return self.start_percent <= step / total < self.end_percent


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
    scheduler: str = FAMILY_DEFAULT
    noise_prior: float = 0.5

    def validate(self, model: VideoModel) -> None:
        if self.steps < 1:
            raise InvalidSettingError(f"Sampling steps must be at least 1, got {self.steps}.")
        if self.frames < 1:
            raise InvalidSettingError(f"Frame count must be at least 1, got {self.frames}.")
        if not (isinstance(self.seed, int) and 0 <= self.seed < SEED_LIMIT):
            raise InvalidSettingError(f"Seed must be a whole number from 0 to {SEED_LIMIT - 1}, got {self.seed}.")
        if self.scheduler not in SCHEDULERS:
            raise InvalidSettingError(f"Unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}.")
        model.family.resolve_scheduler(self.scheduler)
        if not (0.0 <= self.noise_prior <= 1.0):
            raise InvalidSettingError(f"Noise prior must be between 0 and 1, got {self.noise_prior}.")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise InvalidSettingError(f"Guidance scale must be zero or positive, got {self.guidance_scale}.")
        multiple = model.size_multiple
        if self.width % multiple or self.height % multiple or self.width < multiple or self.height < multiple:
            raise InvalidSettingError(f"Width and height must be positive multiples of {multiple} for {model.name}; got {self.width}x{self.height}.")


def blend_noise_prior(inverted: torch.Tensor, noise: torch.Tensor, prior: float) -> torch.Tensor:
    """The start of a motion-guided run: ``sqrt(prior) * inverted + sqrt(1 - prior) * noise`` (unit variance kept).

    Args:
        inverted: the reference's inverted latent ``(C, F, h, w)``, at the run's latent size.
        noise: unit Gaussian noise ``(B, C, F, h, w)``.
        prior: noise prior in ``[0, 1]``; 0 returns ``noise`` itself.
    """
    if prior <= 0:
        return noise
    return math.sqrt(prior) * inverted.unsqueeze(0).to(noise) + math.sqrt(1.0 - prior) * noise


def _start_latent(
    model: VideoModel, config: SamplingConfig, shape: tuple[int, ...], inverted: torch.Tensor | None, sampler: Sampler
) -> torch.Tensor:
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(config.seed))
    if inverted is not None:
        noise = blend_noise_prior(inverted.float().cpu(), noise, config.noise_prior)
    return (noise * sampler.start_scale).to(model.device)


def _motion_processors(
    model: VideoModel, motion: AppliedMotion | None, grid: tuple[int, int, int]
) -> tuple[dict, torch.Tensor | None]:
    """Processors to install and the inverted start latent ``(C, F', h, w)`` (or ``None``) for ``motion``.

    ``grid``: the latent ``(frames, height, width)`` of the run.
    """
    family = model.family
    if motion is None:
        return family.build_processors(model, grid=grid), None
    embedding = motion.embedding
    check_fits(embedding.info, family, family.find_sites(model.denoiser), model.name, architecture=model.identity.get("architecture"))
    mode = motion.resolved_mode
    if motion.strength == 0:
        logger.info("Motion strength 0: sampling with the plain model (no embeddings, no inverted start).")
        return family.build_processors(model, grid=grid), None
    prepared = prepare_for_sampling(embedding.to(model.device), *grid, mode, motion.strength)
    processors = family.build_processors(model, embedding.info.blocks, prepared.query_key, prepared.value, grid)
    return processors, prepared.inverted_latent


def _switch_processors(processors: dict, on: bool) -> None:
    """Turn every installed processor's embeddings on or off (``enabled``: off runs the plain attention)."""
    for processor in processors.values():
        processor.enabled = on


def _refuse_non_finite(tensor: torch.Tensor, where: str, motion: AppliedMotion | None) -> None:
    """Raise :class:`SamplingError` naming the likely causes when ``tensor`` holds NaN or infinite values."""
    if bool(torch.isfinite(tensor).all()):
        return
    causes = "an fp16 overflow (load the model in fp32 or bf16)"
    if motion is not None and motion.strength != 0:
        causes = f"a damaged or extreme embedding, a motion strength too high ({motion.strength:g}), or " + causes
    raise SamplingError(f"Sampling produced NaN or infinite values {where}; nothing was written. Likely cause: {causes}.")


@torch.no_grad()
def sample_video(
    model: VideoModel,
    config: SamplingConfig,
    motion: AppliedMotion | None = None,
    on_step: PreviewCallback | None = None,
) -> torch.Tensor:
    """Generate ``config.frames`` frames (rounded the family's way, logged); returns ``(F, H, W, 3)`` in 0..1 on the CPU.

    Args:
        model: loaded model; it is patched only inside this call and restored even on Cancel or error.
        config: generation settings.
        motion: embedding to apply, or ``None`` for the base model (strength 0 is the base model too).
        on_step: ``(step, total, predicted_clean_latent (1, C, F', h, w))`` after each step; raise to cancel.

    Raises:
        InvalidSettingError: a bad setting, or a size that cannot fit in memory (checked before any work).
        SamplingError: the latents or the decoded frames became NaN or infinite.
    """
    config.validate(model)
    if motion is not None:
        motion.validate()
    family = model.family
    guided = config.guidance_scale != 1.0
    frames = family.round_frames(config.frames)
    check_sampling_fits(model, config.width, config.height, frames, guided)
    latent_h, latent_w = model.latent_size(config.width, config.height)
    grid = (family.latent_frames(frames), latent_h, latent_w)
    shape = (1, model.latent_channels, *grid)
    sampler = family.make_sampler(model, family.resolve_scheduler(config.scheduler), config.steps, config.seed)
    processors, inverted = _motion_processors(model, motion, grid)
    if motion is not None and motion.strength != 0 and inverted is None and config.noise_prior > 0:
        logger.info("The embedding carries no inverted latent (interrupted training?); starting from pure noise.")
    positive = encode_prompt(model, config.prompt)
    text = torch.cat([encode_prompt(model, config.negative_prompt), positive]) if guided else positive
    latents = _start_latent(model, config, shape, inverted, sampler)
    total = len(sampler.timesteps)
    windowed = motion is not None and motion.strength != 0
    with model.lock, installed_processors(model.denoiser, processors):
        for index, timestep in enumerate(sampler.timesteps):
            if windowed:
                _switch_processors(processors, motion.acts_at(index, total))
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = sampler.model_input(model_input, timestep)
            output = family.predict(model, model_input, timestep, text).float()
            if guided:
                uncond, cond = output.chunk(2)
                output = uncond + config.guidance_scale * (cond - uncond)
            result = sampler.step(output, timestep, latents)
            latents = result.latents
            _refuse_non_finite(latents, f"at step {index + 1} of {total}", motion)
            if on_step is not None:
                on_step(index + 1, total, latents if result.predicted_clean is None else result.predicted_clean)
    frames = decode_latents(model, latents)
    _refuse_non_finite(frames, "in the VAE decode", motion)
    return frames
