"""Estimate training and sampling memory before starting, and refuse sizes that cannot fit (instead of failing minutes in).

Each family gives its own formulas (``estimate_*_bytes`` of :class:`motion_core.families.base.ModelFamily`; the
UNet3D ones and how they were measured are in :mod:`motion_core.families.unet3d_memory`); this module compares them
with the free memory of the device. The same training estimate decides gradient checkpointing ``auto``. A user who
knows better can set ``MOTION_INVERSION_SKIP_MEMORY_CHECK=1``.
"""

from __future__ import annotations

import logging
import os

import torch

from .errors import InvalidSettingError
from .model_loading import VideoModel

logger = logging.getLogger(__name__)

SKIP_ENV = "MOTION_INVERSION_SKIP_MEMORY_CHECK"
SAFETY_FRACTION = 0.9


def estimate_training_bytes(
    model: VideoModel, frames: int, latent_height: int, latent_width: int, checkpointing: bool, layer_set: str = "all"
) -> int:
    """Rough peak activation memory (bytes) of one training step, on top of the loaded model (the family's formula).

    Args:
        frames, latent_height, latent_width: size of the training latents ``(1, C, frames, h, w)`` (latent frames).
        checkpointing: whether gradient checkpointing is on.
        layer_set: one of the family's layer sets (unknown names count as the largest).
    """
    return model.family.estimate_training_bytes(model, frames, latent_height, latent_width, checkpointing, layer_set)


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free memory, or the system's available RAM on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
    return int(pages * os.sysconf("SC_PAGE_SIZE")) if pages else 1 << 62


def estimate_vae_encode_bytes(model: VideoModel, frames: int, height: int, width: int) -> int:
    """Rough peak memory (bytes) of encoding ``frames`` video frames of ``height`` x ``width`` pixels with the VAE."""
    return model.family.estimate_vae_encode_bytes(model, frames, height, width)


def estimate_sampling_bytes(model: VideoModel, frames: int, latent_height: int, latent_width: int, guided: bool) -> int:
    """A floor on the peak memory (bytes) of one generation at ``frames`` latent frames (the family's formula)."""
    return model.family.estimate_sampling_bytes(model, frames, latent_height, latent_width, guided)


def _free_bytes(model: VideoModel, available: int | None) -> int:
    return available_bytes(model.device) if available is None else int(available)


def decide_gradient_checkpointing(
    model: VideoModel,
    frames: int,
    latent_height: int,
    latent_width: int,
    setting: str,
    layer_set: str = "all",
    available: int | None = None,
) -> bool:
    """Resolve ``setting`` (``auto`` / ``on`` / ``off``) to whether gradient checkpointing is used.

    ``auto`` turns it on only when the run without it would not fit in the free memory (``available`` bytes,
    or what :func:`available_bytes` reports): checkpointing costs an extra forward pass, not quality.
    """
    if setting != "auto":
        return setting == "on"
    need = estimate_training_bytes(model, frames, latent_height, latent_width, False, layer_set)
    have = _free_bytes(model, available)
    enabled = need > SAFETY_FRACTION * have
    logger.info(
        "Gradient checkpointing auto: %s (training without it needs about %.2f GiB, %.2f GiB free on %s)",
        "on" if enabled else "off", need / 2**30, have / 2**30, model.device,
    )
    return enabled


def check_training_fits(
    model: VideoModel,
    frames: int,
    latent_height: int,
    latent_width: int,
    checkpointing: bool,
    layer_set: str = "all",
    available: int | None = None,
    video_frames: int | None = None,
) -> None:
    """Raise :class:`InvalidSettingError` when the VAE encode or a training step would not fit in free memory.

    ``frames`` are latent frames; ``video_frames`` the clip's frames (default: ``frames``, as on UNet3D).
    ``available``: free bytes to compare with (default: :func:`available_bytes` of the model's device).
    """
    height, width = latent_height * model.vae_scale_factor, latent_width * model.vae_scale_factor
    video_frames = frames if video_frames is None else video_frames
    training = estimate_training_bytes(model, frames, latent_height, latent_width, checkpointing, layer_set)
    encode = estimate_vae_encode_bytes(model, video_frames, height, width)
    need = max(training, encode)
    have = _free_bytes(model, available)
    logger.info(
        "Estimated memory: VAE encode %.2f GiB, training %.2f GiB; %.2f GiB free on %s",
        encode / 2**30, training / 2**30, have / 2**30, model.device,
    )
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return
    if need > SAFETY_FRACTION * have:
        if encode > training:
            what, hint = f"Encoding {video_frames} frames at {width}x{height} with the VAE", ""
        else:
            what = f"Training {video_frames} frames at {width}x{height}"
            hint = "" if checkpointing else " turn gradient checkpointing on, or"
            if layer_set == "all":
                hint += f" use the {model.family.layer_sets[0]} layer set, or"
        raise InvalidSettingError(
            f"{what} needs about {need / 2**30:.1f} GiB but only {have / 2**30:.1f} GiB is free on {model.device}. "
            f"To fit,{hint} lower the width, height or frame count. (The estimate errs high; set {SKIP_ENV}=1 to "
            "try anyway.)"
        )


def check_sampling_fits(model: VideoModel, width: int, height: int, frames: int, guided: bool) -> None:
    """Raise :class:`InvalidSettingError`, before any work, when a generation of this size cannot fit in memory."""
    latent_height, latent_width = model.latent_size(width, height)
    need = estimate_sampling_bytes(model, model.family.latent_frames(frames), latent_height, latent_width, guided)
    have = available_bytes(model.device)
    logger.debug("Sampling needs at least %.2f GiB, %.2f GiB free on %s", need / 2**30, have / 2**30, model.device)
    if os.environ.get(SKIP_ENV, "") not in ("", "0") or need <= have:
        return
    raise InvalidSettingError(
        f"Generating {frames} frames at {width}x{height} needs at least {need / 2**30:.1f} GiB but only "
        f"{have / 2**30:.1f} GiB is free on {model.device}. Lower the width, height or frame count. "
        f"(Set {SKIP_ENV}=1 to try anyway.)"
    )
