"""Estimate training memory before starting, and refuse sizes that cannot fit (instead of failing minutes in).

The estimate is deliberately simple: activation memory of a UNet3D grows with frames x latent area x the
channel width of each resolution level (each level has a quarter of the area of the one above). The factors
below were fitted to peak memory measured with ``benchmarks/bench_training.py`` and err on the high side.
"""

from __future__ import annotations

import logging
import os

import torch

from .errors import InvalidSettingError
from .model_loading import VideoModel

logger = logging.getLogger(__name__)

# Stored activations per (frame x latent position x channel) of one level, in elements.
ACTIVATIONS_PER_ELEMENT = {False: 48.0, True: 12.0}
SAFETY_FRACTION = 0.9


def estimate_training_bytes(model: VideoModel, frames: int, latent_height: int, latent_width: int, checkpointing: bool) -> int:
    """Rough peak activation memory (bytes) of one training step, on top of the loaded model."""
    element = torch.finfo(model.dtype).bits // 8
    per_position = sum(c / 4**level for level, c in enumerate(model.unet.config.block_out_channels))
    return int(ACTIVATIONS_PER_ELEMENT[checkpointing] * frames * latent_height * latent_width * per_position * element)


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


def check_training_fits(model: VideoModel, frames: int, latent_height: int, latent_width: int, checkpointing: bool) -> None:
    """Raise :class:`InvalidSettingError` when the estimate exceeds the free memory, with what to change."""
    need = estimate_training_bytes(model, frames, latent_height, latent_width, checkpointing)
    have = available_bytes(model.device)
    logger.info("Estimated training memory %.2f GiB, %.2f GiB free on %s", need / 2**30, have / 2**30, model.device)
    if need > SAFETY_FRACTION * have:
        hint = "" if checkpointing else " turn gradient checkpointing on, or"
        raise InvalidSettingError(
            f"Training {frames} frames at {latent_width * model.vae_scale_factor}x{latent_height * model.vae_scale_factor} "
            f"needs about {need / 2**30:.1f} GiB but only {have / 2**30:.1f} GiB is free on {model.device}. "
            f"To fit,{hint} lower the width, height or frame count."
        )
