"""The AnimateDiff family: Stable Diffusion 1.5 with a motion adapter, as diffusers' ``UNetMotionModel``.

A diffusers ``AnimateDiffPipeline`` folder (``unet/`` holds the ``UNetMotionModel``: the SD1.5 UNet with the motion
modules folded in) with SD1.5's ``AutoencoderKL``, CLIP text encoder and DDPM-family scheduler. Everything but the
denoiser is what the UNet3D family does (per-frame VAE, CLIP prompt, epsilon/v DDPM objective, DDIM inversion,
diffusers' samplers), so this family inherits it and changes only:

- Motion sites: the motion modules (``down_blocks.i.motion_modules.j``, ``mid_block.motion_modules.0``,
  ``up_blocks.i.motion_modules.j``, each an ``AnimateDiffTransformer3D``), whose ``attn1`` and ``attn2`` both attend
  over frames in the ``(B*h*w, N, C)`` layout of UNet3D's temporal blocks, after a sinusoidal position embedding. So
  the same processors serve them; layer sets are the UNet3D ones by resolution level (``paper``: the deepest level,
  ``paper+640``: the two deepest, ``all``).
- The prompt embedding goes in once per frame (``UNetMotionModel`` folds frames into the batch and does not
  repeat it itself).
- Clips are limited to the motion modules' position table (``motion_max_seq_length``: 32 on v2/v3, 24 on v1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import InvalidSettingError
from ..motion_sites import TemporalBlock
from .unet3d import UNet3DFamily
from .unet3d_layers import build_processors, describe_layer_set, find_temporal_blocks, select_temporal_blocks

if TYPE_CHECKING:
    from ..model_loading import VideoModel

#: The motion modules of a ``UNetMotionModel``.
MOTION_MODULES = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.motion_modules\.(\d+)$|^mid_block\.motion_modules\.0$")
# AnimateDiff v1's position table; v2 / v3 adapters store theirs (32) in the config.
DEFAULT_MAX_FRAMES = 24


def max_frames(denoiser: nn.Module) -> int:
    """Frames the motion modules' sinusoidal position table covers (their ``motion_max_seq_length``)."""
    return int(getattr(denoiser.config, "motion_max_seq_length", None) or DEFAULT_MAX_FRAMES)


class AnimateDiffFamily(UNet3DFamily):
    name = "animatediff"
    denoiser_folder = "unet"
    denoiser_classes = ("UNetMotionModel",)
    layer_set_help = (
        "paper: the motion modules of the deepest level (1280-channel on SD1.5). paper+640 adds the next level. "
        "all: every motion module."
    )

    # ----- motion sites -----
    def find_sites(self, denoiser: nn.Module) -> list[TemporalBlock]:
        return find_temporal_blocks(denoiser, MOTION_MODULES)

    def select_sites(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> list[TemporalBlock]:
        return select_temporal_blocks(denoiser, layer_set, MOTION_MODULES)

    def describe_layer_set(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> str:
        return describe_layer_set(denoiser, layer_set, MOTION_MODULES)

    def build_processors(
        self,
        model: VideoModel,
        sites: Sequence[TemporalBlock] = (),
        query_key: Mapping[str, torch.Tensor] | None = None,
        value: Mapping[str, torch.Tensor] | None = None,
        grid: tuple[int, int, int] | None = None,
    ) -> dict[str, nn.Module]:
        """Processors on every motion-module attention layer (plain ones where no site is selected, same kernel)."""
        self._check_frames(model, grid[0] if grid is not None else None)
        return build_processors(model.denoiser, model.kernel, list(sites), query_key, value, MOTION_MODULES)

    def _check_frames(self, model: VideoModel, frames: int | None) -> None:
        limit = max_frames(model.denoiser)
        if frames is not None and frames > limit:
            raise InvalidSettingError(
                f"{model.name}'s motion modules know {limit} frame positions; {frames} frames were asked for. "
                f"Train and sample at most {limit} frames."
            )

    # ----- objective -----
    def predict(self, model: VideoModel, latents: torch.Tensor, timestep: Any, text: torch.Tensor) -> torch.Tensor:
        """``latents`` ``(B, C, F, h, w)``; the prompt ``text`` ``(B, L, D)`` goes in once per frame."""
        frames = latents.shape[2]
        self._check_frames(model, frames)
        per_frame = text.repeat_interleave(frames, dim=0)
        return model.denoiser(latents.to(model.dtype), timestep, encoder_hidden_states=per_frame).sample
