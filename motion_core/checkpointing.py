"""Gradient checkpointing for ``UNet3DConditionModel`` (diffusers has none for it).

Each down, mid and up block is run under ``torch.utils.checkpoint`` while the context is active: only block
inputs are kept for the backward pass and the block's inside is recomputed, trading one extra forward for
most of the activation memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


@contextlib.contextmanager
def gradient_checkpointing(unet: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Checkpoint the UNet's blocks inside the ``with`` block; the model is restored on exit."""
    if not enabled:
        yield
        return
    blocks = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks]
    for block in blocks:
        block.forward = _checkpointed(block.forward)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # the instance attribute shadowed the class method
