"""Resize frame batches (ComfyUI IMAGE layout ``(F, H, W, C)`` in 0..1) by crop, pad or stretch."""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
import torch.nn.functional as F

from .errors import InvalidSettingError

logger = logging.getLogger(__name__)

ResizeMode = Literal["crop", "pad", "stretch"]
RESIZE_MODES: tuple[str, ...] = ("crop", "pad", "stretch")


def to_rgb(frames: torch.Tensor) -> torch.Tensor:
    """``(F, H, W, C)`` with C = 1 (grey), 3 or 4 (alpha, composited over black) -> ``(F, H, W, 3)`` float."""
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise InvalidSettingError(f"Expected frames shaped (frames, height, width, 1|3|4), got {tuple(frames.shape)}.")
    frames = frames.float()
    if frames.shape[-1] == 1:
        return frames.expand(-1, -1, -1, 3)
    if frames.shape[-1] == 4:
        return frames[..., :3] * frames[..., 3:4]
    return frames


def _interpolate(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(F, H, W, 3)`` -> ``(F, height, width, 3)``, antialiased when shrinking."""
    if frames.shape[1:3] == (height, width):
        return frames
    chw = frames.permute(0, 3, 1, 2)
    shrinking = height < frames.shape[1] or width < frames.shape[2]
    out = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    return out.clamp(0.0, 1.0).permute(0, 2, 3, 1)


def resize_frames(frames: torch.Tensor, width: int, height: int, mode: str = "crop") -> torch.Tensor:
    """Fit ``frames`` ``(F, H, W, C)`` to ``(F, height, width, 3)``.

    crop: scale to cover, then cut the centre; pad: scale to fit, then centre on black; stretch: plain resize.
    """
    if mode not in RESIZE_MODES:
        raise InvalidSettingError(f"Unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}.")
    if width < 1 or height < 1:
        raise InvalidSettingError(f"Cannot resize to {width}x{height}.")
    frames = to_rgb(frames)
    src_h, src_w = frames.shape[1:3]
    if mode == "stretch" or (src_h, src_w) == (height, width):
        return _interpolate(frames, height, width)
    cover = mode == "crop"
    scale = max(width / src_w, height / src_h) if cover else min(width / src_w, height / src_h)
    new_w = max(1, round(src_w * scale)) if not cover else max(width, math.ceil(src_w * scale - 1e-6))
    new_h = max(1, round(src_h * scale)) if not cover else max(height, math.ceil(src_h * scale - 1e-6))
    scaled = _interpolate(frames, min(new_h, height) if not cover else new_h, min(new_w, width) if not cover else new_w)
    if cover:
        top, left = (scaled.shape[1] - height) // 2, (scaled.shape[2] - width) // 2
        return scaled[:, top : top + height, left : left + width].contiguous()
    out = frames.new_zeros(frames.shape[0], height, width, 3)
    top, left = (height - scaled.shape[1]) // 2, (width - scaled.shape[2]) // 2
    out[:, top : top + scaled.shape[1], left : left + scaled.shape[2]] = scaled
    return out


def snap_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """Round ``width`` and ``height`` to the nearest multiple of ``multiple`` (at least one multiple), logging changes."""
    snapped = tuple(max(multiple, int(math.floor(v / multiple + 0.5)) * multiple) for v in (width, height))
    if snapped != (width, height):
        logger.warning("Size %dx%d is not a multiple of %d for this model; using %dx%d.", width, height, multiple, *snapped)
    return snapped  # type: ignore[return-value]
