"""Install motion attention processors on a UNet for the duration of a ``with`` block, then restore it.

The model a caller holds is never left patched: originals are put back in ``finally``, so an exception or a
Cancel (ComfyUI raises a ``BaseException``) in the middle of training or sampling leaves the base model
exactly as it was.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from .attention import AttentionKernel, MotionAttnProcessor, PlainFrameAttnProcessor
from .temporal_layers import TemporalBlock, find_temporal_blocks

logger = logging.getLogger(__name__)


def build_processors(
    unet: nn.Module,
    kernel: AttentionKernel,
    blocks: list[TemporalBlock] | tuple[TemporalBlock, ...] = (),
    query_key: Mapping[str, torch.Tensor] | None = None,
    value: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, MotionAttnProcessor]:
    """Processors for every temporal attention layer of ``unet``.

    Layers of ``blocks`` get their embeddings (query-key per block, shared by its attention layers; value
    per layer, when present in ``value``); every other temporal layer gets a plain processor with the same
    kernel, so patched and unpatched runs differ only by the embeddings.

    Returns:
        attention module name -> processor.
    """
    query_key = query_key or {}
    value = value or {}
    selected = {block.name: block for block in blocks}
    processors: dict[str, MotionAttnProcessor] = {}
    for block in find_temporal_blocks(unet):
        for attention in block.attention_names:
            if block.name in selected:
                processors[attention] = MotionAttnProcessor(query_key.get(block.name), value.get(attention), kernel)
            else:
                processors[attention] = PlainFrameAttnProcessor(kernel)
    return processors


@contextlib.contextmanager
def installed_processors(unet: nn.Module, processors: Mapping[str, nn.Module]) -> Iterator[None]:
    """Set ``processors`` (attention module name -> processor) on ``unet`` and restore the originals on exit."""
    modules = dict(unet.named_modules())
    originals = {name: modules[name].processor for name in processors}
    try:
        for name, processor in processors.items():
            modules[name].set_processor(processor)
        yield
    finally:
        for name, original in originals.items():
            modules[name].set_processor(original)
