"""Find the temporal attention layers of a UNet3DConditionModel and pick the sets motion embeddings go into.

A *temporal block* is a ``TransformerTemporalModel`` (``down_blocks.i.temp_attentions.j``,
``mid_block.temp_attentions.0``, ``up_blocks.i.temp_attentions.j``, ``transformer_in``). Each holds one
``BasicTransformerBlock`` whose ``attn1`` and ``attn2`` both attend over frames. Inside them hidden states are
``(B*h*w, N, C)``: batch and latent positions folded together row-major ``(b, y, x)``, sequence = N frames.

Layer sets are defined by resolution level, so they mean the same thing on ZeroScope and on a tiny model:
``paper`` is the deepest level that has attention (ZeroScope: the 1280-channel ``down_blocks.2`` and
``up_blocks.1``), ``paper+640`` adds the next level up (ZeroScope: the 640-channel ``down_blocks.1`` and
``up_blocks.2``), ``all`` is every temporal block including ``mid_block`` and ``transformer_in``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ..attention import AttentionKernel, MotionAttnProcessor, PlainFrameAttnProcessor
from ..errors import InvalidSettingError
from ..motion_sites import TemporalBlock

LAYER_SETS = ("paper", "paper+640", "all")

#: The temporal blocks of a ``UNet3DConditionModel``.
UNET3D_BLOCKS = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.temp_attentions\.(\d+)$|^mid_block\.temp_attentions\.0$|^transformer_in$")


def _block_level(name: str, num_levels: int) -> int:
    if name == "transformer_in":
        return 0
    if name.startswith("mid_block"):
        return num_levels - 1
    kind, index = name.split(".")[:2]
    return int(index) if kind == "down_blocks" else num_levels - 1 - int(index)


def find_temporal_blocks(unet: nn.Module, pattern: re.Pattern[str] = UNET3D_BLOCKS) -> list[TemporalBlock]:
    """Every temporal block of ``unet`` in module order (down, mid, up; ``transformer_in`` first).

    ``pattern`` matches the blocks' module names (:data:`UNET3D_BLOCKS`; AnimateDiff's motion modules have their own);
    a block is any module with a ``proj_in`` (its width) and frames-only ``attn1`` / ``attn2`` inside, in the
    ``(B*h*w, N, C)`` layout, levels counted from the UNet's ``block_out_channels``.
    """
    num_levels = len(unet.config.block_out_channels)
    blocks: list[TemporalBlock] = []
    for name, module in unet.named_modules():
        if not pattern.match(name):
            continue
        attention_names = tuple(
            f"{name}.{sub}" for sub, child in module.named_modules() if sub.endswith(("attn1", "attn2")) and hasattr(child, "set_processor")
        )
        channels = module.proj_in.out_features
        blocks.append(TemporalBlock(name, channels, _block_level(name, num_levels), attention_names))
    return blocks


def select_temporal_blocks(unet: nn.Module, layer_set: str, pattern: re.Pattern[str] = UNET3D_BLOCKS) -> list[TemporalBlock]:
    """The temporal blocks of ``layer_set`` (one of :data:`LAYER_SETS`)."""
    if layer_set not in LAYER_SETS:
        raise InvalidSettingError(f"Unknown layer set {layer_set!r}; choose one of {', '.join(LAYER_SETS)}.")
    blocks = find_temporal_blocks(unet, pattern)
    if layer_set == "all":
        return blocks
    in_blocks = [b for b in blocks if b.name.startswith(("down_blocks", "up_blocks"))]
    if not in_blocks:
        raise InvalidSettingError("This UNet has no temporal attention in its down/up blocks; use layer set 'all'.")
    deepest = max(b.level for b in in_blocks)
    levels = {deepest} if layer_set == "paper" else {deepest, deepest - 1}
    return [b for b in in_blocks if b.level in levels]


def describe_layer_set(unet: nn.Module, layer_set: str, pattern: re.Pattern[str] = UNET3D_BLOCKS) -> str:
    """Human-readable summary, e.g. ``"5 blocks: down_blocks.2 x2, up_blocks.1 x3 (1280 ch)"``."""
    blocks = select_temporal_blocks(unet, layer_set, pattern)
    groups: dict[str, int] = {}
    for block in blocks:
        key = re.sub(r"\.(temp_attentions|motion_modules)\.\d+$", "", block.name)
        groups[key] = groups.get(key, 0) + 1
    widths = sorted({b.channels for b in blocks})
    parts = ", ".join(f"{k} x{v}" for k, v in groups.items())
    return f"{len(blocks)} blocks: {parts} ({'/'.join(map(str, widths))} ch)"


def build_processors(
    unet: nn.Module,
    kernel: AttentionKernel,
    blocks: list[TemporalBlock] | tuple[TemporalBlock, ...] = (),
    query_key: Mapping[str, torch.Tensor] | None = None,
    value: Mapping[str, torch.Tensor] | None = None,
    pattern: re.Pattern[str] = UNET3D_BLOCKS,
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
    for block in find_temporal_blocks(unet, pattern):
        for attention in block.attention_names:
            if block.name in selected:
                processors[attention] = MotionAttnProcessor(query_key.get(block.name), value.get(attention), kernel)
            else:
                processors[attention] = PlainFrameAttnProcessor(kernel)
    return processors
