"""The DDPM objective of UNet3D models: noising, training target, prediction split, DDIM inversion.

The scheduler's ``alphas_cumprod`` and ``prediction_type`` (epsilon, v_prediction, sample) define it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..precision import autocast

if TYPE_CHECKING:
    from ..model_loading import VideoModel


def alpha_bar(scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cumulative alpha of ``timesteps`` (``(B,)``), shaped to broadcast over ``like`` ``(B, C, F, h, w)``."""
    values = scheduler.alphas_cumprod.to(like.device)[timesteps.to(like.device).long()].to(torch.float32)
    return values.view(-1, *([1] * (like.ndim - 1)))


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict under the scheduler's ``prediction_type`` (epsilon, v_prediction, sample)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return latents
    if kind == "v_prediction":
        a = alpha_bar(scheduler, timesteps, latents)
        return a.sqrt() * noise - (1 - a).sqrt() * latents
    raise ValueError(f"Unsupported prediction_type {kind!r}")


def add_noise(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Forward diffusion ``sqrt(a) x0 + sqrt(1-a) eps`` for 5-D video latents."""
    a = alpha_bar(scheduler, timesteps, latents)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def split_prediction(scheduler, output: torch.Tensor, sample: torch.Tensor, timestep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert a UNet output at ``timestep`` into (predicted clean latent, predicted noise)."""
    a = scheduler.alphas_cumprod[int(timestep)].to(sample.device, torch.float32)
    kind = scheduler.config.prediction_type
    output = output.float()
    if kind == "epsilon":
        eps = output
        x0 = (sample - (1 - a).sqrt() * eps) / a.sqrt()
    elif kind == "sample":
        x0 = output
        eps = (sample - a.sqrt() * x0) / (1 - a).sqrt()
    elif kind == "v_prediction":
        x0 = a.sqrt() * sample - (1 - a).sqrt() * output
        eps = a.sqrt() * output + (1 - a).sqrt() * sample
    else:
        raise ValueError(f"Unsupported prediction_type {kind!r}")
    return x0, eps


@torch.no_grad()
def ddim_invert(
    model: VideoModel,
    latents: torch.Tensor,
    text_embedding: torch.Tensor,
    steps: int = 50,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run deterministic DDIM backwards, from the clean latents to the noisiest timestep of a ``steps``-step schedule.

    ``steps`` model evaluations: evaluation ``i`` is made at the schedule's ``i``-th timestep (ascending) on the
    sample at the level one DDIM step below it (the clean latent for the first), and moves the sample up to
    that timestep, as the reference code (and diffusers' ``DDIMInverseScheduler`` for epsilon models) does.
    The model's output is read as a noise estimate at the timestep it was given, so epsilon, v-prediction and
    sample-prediction models invert alike.

    Args:
        latents: ``(1, C, F, h, w)`` clean VAE latents.
        text_embedding: ``(1, L, D)`` (the empty prompt: no guidance).
        steps: DDIM steps (the reference code uses 50).
        on_step: called with ``(done, steps)`` after each model evaluation; may raise to cancel.

    Returns:
        ``(1, C, F, h, w)`` fp32 latent at the first timestep a ``steps``-step DDIM sampler starts from.
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(steps)
    step_size = scheduler.config.num_train_timesteps // steps  # what DDIMScheduler.step goes down by
    alphas = scheduler.alphas_cumprod.to(torch.float32)
    sample = latents.to(torch.float32)
    timesteps = [int(t) for t in scheduler.timesteps.flip(0)]  # ascending; the last is where sampling starts
    for index, timestep in enumerate(timesteps):
        below = timestep - step_size
        # the sample's own noise level; below the first timestep it is clean (the scheduler's final alpha)
        a_from = alphas[below] if below >= 0 else torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32)
        a_from = a_from.to(sample.device)
        a_to = alphas[timestep].to(sample.device)
        with autocast(model):
            output = model.family.predict(model, sample, timestep, text_embedding)
        _, noise = split_prediction(scheduler, output, sample, timestep)
        clean = (sample - (1 - a_from).sqrt() * noise) / a_from.sqrt()
        sample = a_to.sqrt() * clean + (1 - a_to).sqrt() * noise
        if on_step is not None:
            on_step(index + 1, len(timesteps))
    return sample
