"""Flow-matching sampling and inversion for families whose denoiser predicts velocity (Wan and later DiTs).

The formulas are :mod:`motion_core.flow_matching`'s; this module only walks its sigma schedule: down from 1 to 0
to sample (Euler), up from 0 to 1 to invert a clean latent (the same Euler steps backwards).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .. import flow_matching as fm
from ..precision import autocast
from .base import Sampler, SamplerStep

if TYPE_CHECKING:
    from ..model_loading import VideoModel


class FlowEulerSampler(Sampler):
    """Euler steps of the flow ODE over ``flow_matching.sampling_sigmas(steps, shift)``; adds no noise.

    ``timesteps`` are the sigmas of the model calls (1 first, the clean end 0 excluded).
    """

    def __init__(self, steps: int, shift: float) -> None:
        self.sigmas = [float(s) for s in fm.sampling_sigmas(steps, shift)]
        self.timesteps = self.sigmas[:-1]
        self.start_scale = 1.0
        self._index = 0

    def step(self, output: torch.Tensor, timestep: float, latents: torch.Tensor) -> SamplerStep:
        sigma, following = self.sigmas[self._index], self.sigmas[self._index + 1]
        self._index += 1
        velocity = output.to(latents.dtype)
        return SamplerStep(fm.euler_step(latents, velocity, sigma, following), fm.predicted_clean(latents, velocity, sigma))


Velocity = Callable[[torch.Tensor, float], torch.Tensor]
"""``(sample (1, C, F', h, w), sigma) -> velocity`` of the same shape: one model call, conditioning already bound."""


@torch.no_grad()
def flow_euler_invert_with(
    velocity: Velocity,
    latents: torch.Tensor,
    steps: int,
    shift: float,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Integrate the flow ODE backwards from the clean ``latents`` ``(1, C, F', h, w)`` (sigma 0) to sigma 1.

    The sampler's own sigmas in ascending order: ``steps`` calls of ``velocity``, evaluation ``i`` at the lower sigma
    of the step (the clean latent for the first). Returns ``(1, C, F', h, w)`` fp32, where a ``steps``-step sampler
    starts. Any implementation of the model can be passed in (diffusers' here, ComfyUI's on the native path).
    """
    sigmas = [float(s) for s in fm.sampling_sigmas(steps, shift).flip(0)]
    sample = latents.to(torch.float32)
    for index in range(steps):
        sample = fm.euler_step(sample, velocity(sample, sigmas[index]).float(), sigmas[index], sigmas[index + 1])
        if on_step is not None:
            on_step(index + 1, steps)
    return sample


def flow_euler_invert(
    model: VideoModel,
    latents: torch.Tensor,
    text: torch.Tensor,
    steps: int,
    shift: float,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """:func:`flow_euler_invert_with` through ``model``'s denoiser (under its autocast) with the prompt ``text``."""

    def velocity(sample: torch.Tensor, sigma: float) -> torch.Tensor:
        with autocast(model):
            return model.family.predict(model, sample, torch.tensor([sigma]), text)

    return flow_euler_invert_with(velocity, latents, steps, shift, on_step)
