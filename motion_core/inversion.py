"""DDIM inversion of the reference latents (computed once after training and stored with the embedding)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .diffusion import split_prediction
from .model_loading import VideoModel


@torch.no_grad()
def ddim_invert(
    model: VideoModel,
    latents: torch.Tensor,
    text_embedding: torch.Tensor,
    steps: int = 50,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run deterministic DDIM from the clean latents up to the noisiest timestep of a ``steps``-step schedule.

    Args:
        latents: ``(1, C, F, h, w)`` clean VAE latents.
        text_embedding: ``(1, L, D)`` (the empty prompt: no guidance).
        steps: DDIM steps (the reference code uses 50).
        on_step: called with (step, total) after each model evaluation; may raise to cancel.

    Returns:
        ``(1, C, F, h, w)`` fp32 latent at the first timestep a DDIM sampler would start from.
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(steps)
    ascending = scheduler.timesteps.flip(0).tolist()
    alphas = scheduler.alphas_cumprod.to(torch.float32)
    sample = latents.to(torch.float32)
    for index, (current, following) in enumerate(zip(ascending[:-1], ascending[1:])):
        output = model.unet(sample.to(model.dtype), current, encoder_hidden_states=text_embedding).sample
        clean, noise = split_prediction(scheduler, output, sample, current)
        a_next = alphas[following].to(sample.device)
        sample = a_next.sqrt() * clean + (1 - a_next).sqrt() * noise
        if on_step is not None:
            on_step(index + 1, len(ascending) - 1)
    return sample
