"""What transformer-stack families (Wan, Latte) share: layer sets as fractions of depth, the value-embedding grid,
loading a text part by the class ``model_index.json`` names, and diffusers' own gradient checkpointing.

A transformer-stack denoiser is a list of equal blocks, so a layer set names a share of the depth (it means the same
on a 2-block toy and on a 30-block release) and the value embedding sits on the token grid, coarsened on large
latents so that it stays small.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelLoadError
from ..motion_sites import TemporalBlock, embedding_value_count

# Layer set -> (first, stop, step) as fractions of the block count.
LAYER_SETS: dict[str, tuple[float, float, int]] = {
    "alternate": (0.0, 1.0, 2),
    "all": (0.0, 1.0, 1),
    "first_half": (0.0, 0.5, 1),
    "last_half": (0.5, 1.0, 1),
}
# The value embedding's grid is the coarsest level of the token grid whose longer side is at most this.
VALUE_GRID_MAX_SIDE = 16
LOADABLE_LIBRARIES = ("transformers",)

# Training memory: elements kept per token and block for the backward pass, in units of the model width and of the
# feed-forward width. Calibrated on CPU, fp32 (a 4-block, dim-512, ffn-1536 Wan at 320 to 2880 tokens: 18.4 k
# elements per token and block fit every measured peak; see estimate_training_bytes), then MEMORY_SAFETY on top.
STORED_PER_TOKEN_DIM = 24
STORED_PER_TOKEN_FFN = 4
MEMORY_SAFETY = 1.25
#: Bytes each trainable embedding value holds while training: the fp32 value, its gradient and AdamW's two moments.
#: The transformer-stack estimates count them on top of the activations (the UNet3D factors were fitted to whole
#: training peaks, which include them).
TRAINING_BYTES_PER_EMBEDDING_VALUE = 4 * 4


def value_grid_level(latent_height: int, latent_width: int, patch: int = 2, max_side: int = VALUE_GRID_MAX_SIDE) -> int:
    """Level of the value grid: the token grid (level ``log2(patch)``), halved until its longer side is at most
    ``max_side`` (default :data:`VALUE_GRID_MAX_SIDE`: 480x832 -> tokens 30x52 -> 8x13, level 3; a 64x64 toy keeps its
    4x4 tokens)."""
    level = max(0, int(math.log2(patch)))
    h, w = latent_height, latent_width
    for _ in range(level):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    while max(h, w) > max_side:
        h, w, level = math.ceil(h / 2), math.ceil(w / 2), level + 1
    return level


def block_indices(count: int, layer_set: str) -> list[int]:
    """Indices of the blocks a layer set of :data:`LAYER_SETS` selects among ``count`` blocks."""
    first, stop, step = LAYER_SETS[layer_set]
    return list(range(math.floor(first * count), max(1, math.ceil(stop * count)), step))


def load_transformers_part(folder: Path, index: Mapping[str, Any], part: str, **kwargs: Any) -> Any:
    """Load ``part`` (``text_encoder``, ``tokenizer``) with the transformers class ``model_index.json`` names for it
    (UMT5EncoderModel / T5EncoderModel / CLIPTextModel, T5TokenizerFast / CLIPTokenizer, ...)."""
    import transformers

    entry = index.get(part)
    library, class_name = (entry if isinstance(entry, list) and len(entry) == 2 else (None, None))
    cls = getattr(transformers, str(class_name), None) if library in LOADABLE_LIBRARIES else None
    if cls is None:
        raise ModelLoadError(
            f"{folder.name}/model_index.json names {entry!r} for {part}; expected a transformers class "
            "such as UMT5EncoderModel / T5TokenizerFast (Wan), T5EncoderModel (Latte) or CLIPTextModel / CLIPTokenizer."
        )
    return cls.from_pretrained(folder, subfolder=part, local_files_only=True, **kwargs)


@contextlib.contextmanager
def diffusers_checkpointing(denoiser: nn.Module, enabled: bool) -> Iterator[None]:
    """diffusers' own per-block checkpointing of ``denoiser`` while the context is active (left as found on exit)."""
    already = bool(getattr(denoiser, "is_gradient_checkpointing", False))
    if not enabled or already:
        yield
        return
    denoiser.enable_gradient_checkpointing()
    try:
        yield
    finally:
        denoiser.disable_gradient_checkpointing()


def training_activation_bytes(tokens: int, dim: int, ffn_dim: int, blocks: int, element: int, checkpointing: bool) -> int:
    """Bytes the backward pass keeps for ``blocks`` transformer blocks over ``tokens`` tokens (see
    :meth:`WanFamily.estimate_training_bytes`, which measured the factors on Wan blocks)."""
    per_block = tokens * (STORED_PER_TOKEN_DIM * dim + STORED_PER_TOKEN_FFN * ffn_dim)
    stored = blocks * tokens * dim + 3 * per_block if checkpointing else blocks * per_block
    return int(MEMORY_SAFETY * stored * element)


def embedding_training_bytes(sites: Sequence[TemporalBlock], frames: int, latent_height: int, latent_width: int) -> int:
    """Bytes the embeddings on ``sites`` hold while training at ``frames`` (N) and that latent size: small on the
    UNets, but the value grids of a transformer stack add up (Wan 2.1 1.3B at 480x832, 21 latent frames, ``all``:
    30 blocks of 1536 on an 8x13 grid, 101 M values, 1.6 GB)."""
    return TRAINING_BYTES_PER_EMBEDDING_VALUE * embedding_value_count(sites, frames, latent_height, latent_width)


def describe_sites(sites: Sequence[TemporalBlock], count: int, noun: str, latent_height: int, latent_width: int) -> str:
    """One line for a layer set of a block stack, e.g. ``"2 of 4 blocks (0, 2), 96 ch, value grid 4x4"``."""
    grid = sites[0].grid(latent_height, latent_width) if sites else (0, 0)
    names = ", ".join(s.name.split(".")[-1] for s in sites)
    return f"{len(sites)} of {count} {noun} ({names}), {sites[0].channels if sites else 0} ch, value grid {grid[0]}x{grid[1]}"
