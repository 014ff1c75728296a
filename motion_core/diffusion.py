"""Text and VAE encoding of a loaded model, whatever its family (each family does it its own way).

The UNet3D DDPM helpers that lived here (``add_noise``, ``training_target``, ...) are in
:mod:`motion_core.families.ddpm` and re-exported for older imports.
"""

from __future__ import annotations

import torch

from .families.ddpm import add_noise, alpha_bar, split_prediction, training_target
from .families.unet3d import VAE_CHUNK_FRAMES
from .model_loading import VideoModel
from .precision import HALF_DTYPES, autocast

__all__ = [
    "HALF_DTYPES", "VAE_CHUNK_FRAMES", "add_noise", "alpha_bar", "autocast", "decode_latents", "encode_frames",
    "encode_prompt", "split_prediction", "training_target",
]


@torch.no_grad()
def encode_prompt(model: VideoModel, prompt: str) -> torch.Tensor:
    """Text embedding of ``prompt``: ``(1, L, D)`` in the model's dtype."""
    return model.family.encode_prompt(model, prompt)


@torch.no_grad()
def encode_frames(model: VideoModel, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE latents of a clip.

    Args:
        frames: ``(F, H, W, 3)`` in 0..1 (ComfyUI IMAGE layout); H and W multiples of the VAE factor.
        generator: for the posterior sample, where the family samples it (deterministic when given).

    Returns:
        ``(1, C, F', H/f, W/f)`` in the model's normalised latent space, fp32 (F' = the family's latent frames).
    """
    return model.family.encode_frames(model, frames, generator)


@torch.no_grad()
def decode_latents(model: VideoModel, latents: torch.Tensor) -> torch.Tensor:
    """Frames of ``latents`` ``(1, C, F', h, w)`` as ``(F, H, W, 3)`` in 0..1 on the CPU, fp32."""
    return model.family.decode_latents(model, latents)
