"""Where motion embeddings sit in a denoiser: one :class:`TemporalBlock` per site, for every model family.

A site carries one query-key embedding ``(1, N, C)`` shared by its attention layers and one value embedding per
attention layer at a spatial grid given by ``level`` (each level halves the latent grid, rounding up). On UNet3D
a site is a temporal transformer block (N = frames); on Wan it is a transformer block's self-attention
(N = latent frames, ``level`` = the value grid, coarser than the token grid to keep the value embedding small).
The name is kept from the UNet3D era because it is stored in embedding files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TemporalBlock:
    """One motion site and where it sits in the denoiser.

    Attributes:
        name: module path, e.g. ``"down_blocks.2.temp_attentions.0"`` or ``"blocks.4"``.
        channels: width C of its attention layers.
        level: number of 2x downsamplings between the latent and the value embedding's grid (0 = full latent grid).
        attention_names: module paths of its attention layers that get processors.
    """

    name: str
    channels: int
    level: int
    attention_names: tuple[str, ...]

    def grid(self, latent_height: int, latent_width: int) -> tuple[int, int]:
        """Spatial grid (h, w) of the value embedding for a latent of ``latent_height x latent_width``.

        diffusers' stride-2 downsampling with padding 1 rounds up, so each level is ``ceil(size / 2)``.
        """
        h, w = latent_height, latent_width
        for _ in range(self.level):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return h, w


def embedding_value_count(sites: Sequence[TemporalBlock], frames: int, latent_height: int, latent_width: int) -> int:
    """Trainable values of the embeddings on ``sites`` for ``frames`` (N) at that latent size: per site one
    query-key embedding ``(1, N, C)`` and per attention layer one value embedding ``(h*w, N, C)`` on the site's grid
    (the shapes :func:`motion_core.embedding.zero_embedding` makes)."""
    total = 0
    for site in sites:
        grid_h, grid_w = site.grid(latent_height, latent_width)
        total += frames * site.channels * (1 + len(site.attention_names) * grid_h * grid_w)
    return total
