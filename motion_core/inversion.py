"""Inversion of the reference latents (the start latent stored with a motion embedding), for any family."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .families.ddpm import ddim_invert
from .model_loading import VideoModel

__all__ = ["ddim_invert", "invert_latents"]


@torch.no_grad()
def invert_latents(
    model: VideoModel,
    latents: torch.Tensor,
    text_embedding: torch.Tensor,
    steps: int,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Integrate ``latents`` ``(1, C, F', h, w)`` back to where sampling starts, the family's way (DDIM on UNet3D,
    flow Euler on Wan), through the model as it is patched now. Returns ``(1, C, F', h, w)`` fp32."""
    return model.family.invert(model, latents, text_embedding, steps, on_step)
