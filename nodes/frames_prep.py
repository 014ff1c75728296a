"""Fit an IMAGE batch from any node to the size and frame count a model can train on."""

from __future__ import annotations

import logging

import torch

from ..motion_core.errors import VideoInputError
from ..motion_core.frame_resize import resize_frames, snap_size

logger = logging.getLogger(__name__)


def prepare_training_frames(frames: torch.Tensor, width: int, height: int, frame_count: int, multiple: int) -> torch.Tensor:
    """IMAGE ``(F, H, W, C)`` -> ``(frame_count, height', width', 3)`` with sizes snapped to ``multiple``.

    ``frame_count`` 0 keeps every frame; more frames than asked keeps the first ``frame_count``; fewer is an
    error (repeating frames would teach the model a pause that is not in the reference).
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        raise VideoInputError(f"Expected an IMAGE batch (frames, height, width, channels), got {getattr(frames, 'shape', type(frames))}.")
    if frame_count and frames.shape[0] < frame_count:
        raise VideoInputError(
            f"The reference has {frames.shape[0]} frames but training asks for {frame_count}; "
            "lower frame_count (0 uses all frames) or load more frames."
        )
    if frame_count:
        frames = frames[:frame_count]
    width, height = snap_size(width or frames.shape[2], height or frames.shape[1], multiple)
    return resize_frames(frames.float(), width, height, "crop").contiguous()
