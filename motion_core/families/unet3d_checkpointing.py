"""Gradient checkpointing for ``UNet3DConditionModel`` (diffusers has none for it) and AnimateDiff's ``UNetMotionModel``
(whose own checkpoints only its ResNets).

Inside each down, mid and up block, every layer (each ResNet, temporal convolution, spatial transformer,
temporal transformer, down- and upsampler) runs under ``torch.utils.checkpoint`` while the context is active:
only the layer inputs are kept for the backward pass and the layer's inside is recomputed, trading one extra
forward for most of the activation memory. Layer granularity keeps the recompute peak to one layer; whole-block
checkpointing recomputed a whole block at once and saved about a fifth of the memory where this saves more
(``benchmarks/bench_training.py`` measures it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# The ModuleList attributes of diffusers' 3D UNet and motion UNet blocks that hold the layers run one after another.
LAYER_LISTS = ("resnets", "temp_convs", "attentions", "temp_attentions", "motion_modules", "downsamplers", "upsamplers")


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def checkpoint_units(unet: nn.Module) -> list[nn.Module]:
    """The layers that are checkpointed one by one: every layer of every down, mid and up block."""
    blocks = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks]
    units: list[nn.Module] = []
    for block in blocks:
        for name in LAYER_LISTS:
            layers = getattr(block, name, None)
            if layers is not None:
                units.extend(layers)
    return units


@contextlib.contextmanager
def gradient_checkpointing(unet: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Checkpoint the UNet's layers inside the ``with`` block; the model is restored on exit."""
    if not enabled:
        yield
        return
    units = checkpoint_units(unet)
    for unit in units:
        unit.forward = _checkpointed(unit.forward)
    try:
        yield
    finally:
        for unit in units:
            del unit.forward  # the instance attribute shadowed the class method
