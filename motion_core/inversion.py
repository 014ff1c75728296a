"""DDIM inversion of the reference latents: the start latent stored with a motion embedding."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .diffusion import autocast, split_prediction
from .model_loading import VideoModel


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
            output = model.unet(sample.to(model.dtype), timestep, encoder_hidden_states=text_embedding).sample
        _, noise = split_prediction(scheduler, output, sample, timestep)
        clean = (sample - (1 - a_from).sqrt() * noise) / a_from.sqrt()
        sample = a_to.sqrt() * clean + (1 - a_to).sqrt() * noise
        if on_step is not None:
            on_step(index + 1, len(timesteps))
    return sample
