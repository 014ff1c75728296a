"""diffusers' own Wan transformer driven as a :class:`~motion_core.native_training.ForeignWan`, for tests and checks.

Training through it uses only what a ``ForeignWan`` gives (block widths, shift, a context that installs the
block-indexed motion and yields the velocity), so it must match the diffusers path exactly (tests/test_native_training.py),
and it is what ComfyUI's adapter is compared with (tests/test_comfy_native_wan_integration.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .. import flow_matching as fm
from ..families.block_stack import diffusers_checkpointing
from ..families.wan_attention import WanMotionAttnProcessor
from ..families.wan_native import TrainableWanMotion
from ..native_training import ForeignWan, VelocityFn
from ..patching import installed_processors


class BlockIndexedProcessor(WanMotionAttnProcessor):
    """diffusers' Wan self-attention taking its q/k and v inputs from a block-indexed motion, as ComfyUI's hook does."""

    def __init__(self, motion: TrainableWanMotion, index: int) -> None:
        super().__init__(None, None, (1, 1), motion.token_grid)
        self.motion, self.index = motion, index

    def motion_inputs(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.motion.inputs(self.index, hidden_states, self.token_grid)


def diffusers_foreign_wan(denoiser: nn.Module, shift: float, installs: list[bool] | None = None) -> ForeignWan:
    """``denoiser`` (a ``WanTransformer3DModel``) as a :class:`ForeignWan` with flow shift ``shift``; each install
    appends whether it checkpoints to ``installs``."""
    parameter = next(denoiser.parameters())

    @contextlib.contextmanager
    def running(motion: TrainableWanMotion, checkpointing: bool) -> Iterator[VelocityFn]:
        processors = {f"blocks.{i}.attn1": BlockIndexedProcessor(motion, i) for i in motion.block_indices}
        if installs is not None:
            installs.append(checkpointing)

        def velocity(noisy: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            timestep = fm.model_timestep(sigma.float().reshape(-1)).to(noisy.device)
            return denoiser(hidden_states=noisy.to(parameter.dtype), timestep=timestep, encoder_hidden_states=text,
                            return_dict=True).sample

        with installed_processors(denoiser, processors), diffusers_checkpointing(denoiser, checkpointing):
            yield velocity

    return ForeignWan(
        name="diffusers Wan as a foreign model", widths=[int(b.attn1.to_q.in_features) for b in denoiser.blocks],
        ffn_dim=int(denoiser.config.ffn_dim), patch=tuple(int(p) for p in denoiser.config.patch_size[1:]), shift=shift,
        spatial_scale=8, device=parameter.device, dtype=parameter.dtype, running=running,
    )
