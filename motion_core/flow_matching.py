"""Rectified-flow (flow matching) arithmetic, as Wan and other video DiTs use it.

One source for the objective, so the toy-world trainer, motion-embedding training, inversion and sampling all agree.
Conventions (diffusers' ``FlowMatchEulerDiscreteScheduler`` and ComfyUI's ``CONST`` sampling):

- ``x_sigma = (1 - sigma) * x0 + sigma * noise`` with ``sigma`` in [0, 1] (1 = pure noise);
- the model predicts the velocity ``noise - x0`` and is called with ``timestep = sigma * 1000``;
- a *shift* ``s`` bends a uniform ``u`` toward the noisy end: ``sigma = s*u / (1 + (s-1)*u)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_SHIFT = 3.0


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Shifted noise levels ``s*u / (1 + (s-1)*u)``; same shape as ``sigmas``; 0 and 1 stay fixed."""
    if shift <= 0:
        raise ValueError(f"flow shift must be positive, got {shift}")
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def draw_sigmas(count: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` training noise levels: uniform in (0, 1), then shifted. Returns ``(count,)`` float32 on CPU."""
    return shift_sigmas(torch.rand(count, generator=generator), shift)


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` or scalar sigma -> broadcastable against ``like`` ``(B, ...)``."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return sigma.reshape(-1, *([1] * (like.ndim - 1))) if sigma.ndim else sigma


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``(1 - sigma) * x0 + sigma * noise``; x0, noise ``(B, ...)``, sigma ``(B,)`` or scalar."""
    s = _per_sample(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What a flow model is trained to predict: ``noise - x0`` (same shape as the inputs)."""
    return noise - x0


def predicted_clean(x: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The clean latent implied by a velocity prediction at ``sigma``: ``x - sigma * v``."""
    return x - _per_sample(sigma, x) * velocity


def model_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """The timestep a flow DiT is called with for noise level ``sigma`` (``sigma * 1000``, float)."""
    return torch.as_tensor(sigma, dtype=torch.float32) * NUM_TRAIN_TIMESTEPS


def sampling_sigmas(steps: int, shift: float) -> torch.Tensor:
    """``steps + 1`` shifted noise levels from 1 down to 0 (the last is the clean end), float32."""
    if steps < 1:
        raise ValueError(f"need at least one sampling step, got {steps}")
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1), shift)


def euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One Euler step of the flow ODE ``dx/dsigma = v`` from ``sigma`` to ``sigma_next`` (either direction).

    Downward (``sigma_next < sigma``) it samples; upward it inverts a clean latent toward noise.
    """
    return x + (sigma_next - sigma) * velocity


def shift_from_config(config: Mapping[str, Any], default: float = DEFAULT_SHIFT) -> float:
    """The flow shift a scheduler config declares.

    ``FlowMatchEulerDiscreteScheduler`` calls it ``shift``, ``UniPCMultistepScheduler`` (Wan's default) ``flow_shift``.
    """
    for key in ("flow_shift", "shift"):
        value = config.get(key)
        if value is not None:
            return float(value)
    return default
