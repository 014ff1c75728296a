"""Appearance augmentation of the reference clip for training (issue 13's "appearance augmentation").

Training can see recoloured (and blurred) copies of the reference instead of the reference alone: each copy applies
ONE transform to every frame, so the object's track, the motion, is the same in every copy while its look differs
from copy to copy. The copies are encoded once, at set-up; each training step draws one of them (the original
included). The start latent stored with the embedding is still the inversion of the original clip.

Kinds (:data:`AUGMENTATIONS`):

* ``off``: the reference only (the default).
* ``colour``: a hue rotation about the grey axis by an angle at least :data:`MIN_HUE_SHIFT_DEGREES` away from 0, and
  a brightness scale in ``[1 - BRIGHTNESS_JITTER, 1 + BRIGHTNESS_JITTER]``.
* ``colour_blur``: the same, then a Gaussian blur of :data:`BLUR_SIGMA_FRACTION` of the shorter side (the outline
  softened, the centroid kept).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import InvalidSettingError

AUGMENTATIONS: tuple[str, ...] = ("off", "colour", "colour_blur")
#: Augmented copies encoded besides the original (each step draws one of the 1 + AUGMENTED_COPIES clips).
AUGMENTED_COPIES = 4
#: The hue rotation's angle is drawn from [MIN, 360 - MIN] degrees: every copy's colour differs from the original's.
MIN_HUE_SHIFT_DEGREES = 60.0
BRIGHTNESS_JITTER = 0.2
#: Gaussian blur sigma as a share of the shorter frame side (about 1.3 pixels at 32, 21 at 512).
BLUR_SIGMA_FRACTION = 1.0 / 24.0


def check_augmentation(kind: str) -> str:
    """``kind`` if it is one of :data:`AUGMENTATIONS`, else a clear error."""
    if kind not in AUGMENTATIONS:
        raise InvalidSettingError(f"Unknown appearance augmentation {kind!r}; choose one of {', '.join(AUGMENTATIONS)}.")
    return kind


def hue_rotation(angle_degrees: float) -> torch.Tensor:
    """The ``(3, 3)`` RGB matrix that rotates colours about the grey axis (1, 1, 1) by ``angle_degrees``.

    Greys are fixed points; a pure red rotated by 120 degrees becomes a pure green.
    """
    angle = math.radians(angle_degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    axis = torch.full((3,), 1.0 / math.sqrt(3.0), dtype=torch.float64)
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]], dtype=torch.float64)
    rotation = cos * torch.eye(3, dtype=torch.float64) + sin * cross + (1.0 - cos) * torch.outer(axis, axis)
    return rotation.float()


def gaussian_blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur every frame of ``frames`` ``(F, H, W, 3)`` with a separable Gaussian of ``sigma`` pixels (edges replicated)."""
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(frames.dtype)
    images = frames.permute(0, 3, 1, 2).reshape(-1, 1, frames.shape[1], frames.shape[2])  # (F*3, 1, H, W)
    images = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    images = F.conv2d(F.pad(images, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return images.reshape(frames.shape[0], 3, frames.shape[1], frames.shape[2]).permute(0, 2, 3, 1)


def augment_clip(frames: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """One augmented copy of ``frames`` ``(F, H, W, 3)`` in 0..1: the same transform on every frame (see the module)."""
    check_augmentation(kind)
    if kind == "off":
        return frames
    draws = torch.rand(2, generator=generator).tolist()
    angle = MIN_HUE_SHIFT_DEGREES + draws[0] * (360.0 - 2.0 * MIN_HUE_SHIFT_DEGREES)
    brightness = 1.0 + BRIGHTNESS_JITTER * (2.0 * draws[1] - 1.0)
    out = frames.float() @ hue_rotation(angle).T * brightness
    if kind == "colour_blur":
        out = gaussian_blur(out, BLUR_SIGMA_FRACTION * min(frames.shape[1], frames.shape[2]))
    return out.clamp(0.0, 1.0).to(frames.dtype)


def augmented_clips(frames: torch.Tensor, kind: str, seed: int, copies: int = AUGMENTED_COPIES) -> list[torch.Tensor]:
    """The clips training draws from: ``frames`` first, then ``copies`` augmented copies (none when ``kind`` is off).

    Deterministic in ``seed``; each is ``(F, H, W, 3)`` like ``frames``.
    """
    if check_augmentation(kind) == "off":
        return [frames]
    generator = torch.Generator().manual_seed(seed)
    return [frames, *(augment_clip(frames, kind, generator) for _ in range(copies))]
