"""Resize frame batches in ComfyUI's IMAGE layout ``(F, H, W, C)``, values 0..1, by crop, pad or stretch.

crop: scale until the frame is covered, then cut the overhang equally on both sides (the centre stays).
pad: scale until the content fits, then centre it on black. stretch: resize to the exact size, ignoring the
aspect ratio. Shrinking is antialiased (bilinear with ``antialias=True``, close to area averaging), so
downscaled reference frames do not alias; enlarging is plain bilinear.

Output sizes are bounded before anything is allocated (:func:`check_frame_budget`): no side above
:data:`MAX_FRAME_SIDE`, and the float32 frames must fit in :data:`FRAME_MEMORY_FRACTION` of the RAM available.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Literal

import torch
import torch.nn.functional as F

from .errors import InvalidSettingError
from .memory_estimate import SKIP_ENV, available_bytes

logger = logging.getLogger(__name__)

ResizeMode = Literal["crop", "pad", "stretch"]
RESIZE_MODES: tuple[str, ...] = ("crop", "pad", "stretch")
# Twice DCI 4K's 4096 and above 8K UHD's 7680: room for any source a camera writes and far above the sizes
# video diffusion models work at, while one float32 frame of 8192x8192 is still only 0.75 GiB.
MAX_FRAME_SIDE = 8192
# The frames of a clip exist twice for a moment (the per-frame list and the stacked batch) and the model
# and its activations need the rest, so one clip may take a quarter of the RAM available when it is made.
FRAME_MEMORY_FRACTION = 0.25
_BYTES_PER_PIXEL = 3 * 4  # RGB float32
_UNKNOWN = 1 << 62  # what memory_estimate.available_bytes says when it cannot tell


def _available_ram_bytes() -> int:
    """RAM available now: MemAvailable (Linux) or sysconf via memory_estimate, else psutil, else unlimited."""
    try:
        available = available_bytes(torch.device("cpu"))
    except (OSError, ValueError):  # os.sysconf has no SC_AVPHYS_PAGES on macOS
        available = _UNKNOWN
    if available < _UNKNOWN:
        return available
    try:
        import psutil  # ComfyUI installs it; the pack does not require it
    except ImportError:
        return _UNKNOWN
    return int(psutil.virtual_memory().available)


def frame_budget_bytes() -> int:
    """Bytes one batch of float32 frames may take now: :data:`FRAME_MEMORY_FRACTION` of the available RAM.

    Unlimited when the memory check is switched off (``MOTION_INVERSION_SKIP_MEMORY_CHECK=1``); the side
    limit :data:`MAX_FRAME_SIDE` still applies then.
    """
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return _UNKNOWN
    return int(FRAME_MEMORY_FRACTION * _available_ram_bytes())


def check_frame_budget(frames: int, width: int, height: int, budget_bytes: int | None = None) -> None:
    """Refuse an output of ``frames`` frames ``(frames, height, width, 3)`` float32 that cannot be made.

    Args:
        frames, width, height: the size of the frame batch about to be allocated (a side of 0 stands for one
            not known yet: only the other side is checked).
        budget_bytes: bytes allowed; default :func:`frame_budget_bytes` (read now). A caller that adds
            frames one by one reads the budget once and passes it, so its own frames are not counted twice.

    Raises:
        InvalidSettingError: a side above :data:`MAX_FRAME_SIDE`, or more bytes than the budget; the message
            names the size, the limit and what to change.
    """
    if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE:
        unknown = " (0: the source's)" if 0 in (width, height) else ""
        raise InvalidSettingError(
            f"Frame size {width}x{height}{unknown} is too large: width and height may be at most {MAX_FRAME_SIDE} "
            "pixels. Choose a smaller width and height."
        )
    need = frames * width * height * _BYTES_PER_PIXEL
    budget = frame_budget_bytes() if budget_bytes is None else budget_bytes
    if need > budget:
        raise InvalidSettingError(
            f"{frames} frames of {width}x{height} need {need / 2**30:.2f} GiB as float32, more than the "
            f"{budget / 2**30:.2f} GiB limit ({FRAME_MEMORY_FRACTION:.0%} of the RAM available now). Lower the "
            f"width, height or frame count (or raise the stride); {SKIP_ENV}=1 lifts the memory limit."
        )


def check_resize_mode(mode: str) -> None:
    """Raise :class:`InvalidSettingError` unless ``mode`` is one of :data:`RESIZE_MODES`."""
    if mode not in RESIZE_MODES:
        raise InvalidSettingError(f"Unknown resize mode {mode!r}; choose one of: {', '.join(RESIZE_MODES)}.")


def to_rgb(frames: torch.Tensor) -> torch.Tensor:
    """Bring a frame batch to three float32 channels.

    Args:
        frames: ``(F, H, W, C)`` with C = 1 (grey, repeated to RGB), 3, or 4 (RGBA, composited over black).
            uint8 input is scaled from 0..255 to 0..1; float input is taken as 0..1.

    Returns:
        ``(F, H, W, 3)`` float32.
    """
    if not isinstance(frames, torch.Tensor):
        raise InvalidSettingError(f"Expected frames as a torch tensor (frames, height, width, channels), got {type(frames).__name__}.")
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise InvalidSettingError(
            f"Expected frames shaped (frames, height, width, channels) with 1, 3 or 4 channels, got {tuple(frames.shape)}. "
            "Pass an IMAGE batch (a single image needs a leading frame dimension of 1)."
        )
    if 0 in frames.shape:
        raise InvalidSettingError(f"The frame batch is empty: shape {tuple(frames.shape)}. Pass at least one frame of at least 1x1 pixels.")
    frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    if frames.shape[-1] == 1:
        return frames.expand(-1, -1, -1, 3)
    if frames.shape[-1] == 4:
        return frames[..., :3] * frames[..., 3:4]
    return frames


def _interpolate(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(F, H, W, 3)`` float -> ``(F, height, width, 3)``; antialiased along any axis that shrinks."""
    if tuple(frames.shape[1:3]) == (height, width):
        return frames
    shrinking = height < frames.shape[1] or width < frames.shape[2]
    channels_first = frames.permute(0, 3, 1, 2)
    resized = F.interpolate(channels_first, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    return resized.permute(0, 2, 3, 1)


def _scaled_size(src_w: int, src_h: int, width: int, height: int, cover: bool) -> tuple[int, int]:
    """Size of the source scaled uniformly to cover (``cover``) or fit inside ``width`` x ``height``."""
    if cover:
        scale = max(width / src_w, height / src_h)
        return max(width, round(src_w * scale)), max(height, round(src_h * scale))
    scale = min(width / src_w, height / src_h)
    return min(width, max(1, round(src_w * scale))), min(height, max(1, round(src_h * scale)))


def _centre_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(F, H, W, 3)`` with H >= height, W >= width -> the centred ``(F, height, width, 3)`` window."""
    top = (frames.shape[1] - height) // 2
    left = (frames.shape[2] - width) // 2
    return frames[:, top : top + height, left : left + width]


def _centre_pad(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(F, h, w, 3)`` with h <= height, w <= width -> ``(F, height, width, 3)``, centred on black."""
    out = frames.new_zeros(frames.shape[0], height, width, 3)
    top = (height - frames.shape[1]) // 2
    left = (width - frames.shape[2]) // 2
    out[:, top : top + frames.shape[1], left : left + frames.shape[2]] = frames
    return out


def resize_frames(frames: torch.Tensor, width: int, height: int, mode: ResizeMode | str = "crop") -> torch.Tensor:
    """Fit a frame batch to ``width`` x ``height``.

    Args:
        frames: ``(F, H, W, C)`` in 0..1, C in {1, 3, 4} (see :func:`to_rgb`).
        width, height: output size in pixels, at least 1.
        mode: ``"crop"`` (cover, cut the centre), ``"pad"`` (fit, black bars) or ``"stretch"`` (exact resize).

    Returns:
        ``(F, height, width, 3)`` float32, contiguous.

    Raises:
        InvalidSettingError: unknown mode, size below 1, an output too large (see :func:`check_frame_budget`),
            or frames of the wrong shape.
    """
    check_resize_mode(mode)
    if int(width) < 1 or int(height) < 1:
        raise InvalidSettingError(f"Cannot resize frames to {width}x{height}; width and height must be at least 1 pixel.")
    width, height = int(width), int(height)
    if isinstance(frames, torch.Tensor) and frames.ndim == 4:
        check_frame_budget(frames.shape[0], width, height)
    frames = to_rgb(frames)
    src_h, src_w = int(frames.shape[1]), int(frames.shape[2])
    if mode == "stretch" or (src_w, src_h) == (width, height):
        return _interpolate(frames, height, width).contiguous()
    cover = mode == "crop"
    new_w, new_h = _scaled_size(src_w, src_h, width, height, cover)
    scaled = _interpolate(frames, new_h, new_w)
    fitted = _centre_crop(scaled, height, width) if cover else _centre_pad(scaled, height, width)
    return fitted.contiguous()


def snap_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """Round ``width`` and ``height`` each to the nearest multiple of ``multiple`` (halves round up).

    Every side ends at least ``multiple``. Logs a warning naming both sizes when the size changed.

    Raises:
        InvalidSettingError: ``multiple`` below 1 or a negative size.
    """
    if multiple < 1:
        raise InvalidSettingError(f"The size multiple must be at least 1, got {multiple}.")
    if width < 0 or height < 0:
        raise InvalidSettingError(f"Width and height cannot be negative, got {width}x{height}.")
    snapped_w, snapped_h = (max(multiple, math.floor(side / multiple + 0.5) * multiple) for side in (width, height))
    if (snapped_w, snapped_h) != (width, height):
        logger.warning("Size %dx%d is not a multiple of %d for this model; using %dx%d instead.", width, height, multiple, snapped_w, snapped_h)
    return snapped_w, snapped_h
