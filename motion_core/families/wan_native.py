"""Motion inputs for a Wan self-attention that is not diffusers' (ComfyUI's ``WanModel``): the same math, by block index.

diffusers' path installs a :class:`~motion_core.families.wan_attention.WanMotionAttnProcessor` per selected block,
built for one latent grid. A foreign Wan implementation only knows, inside its attention, the block index and the
token grid of the current call (ComfyUI passes ``transformer_options["block_index"]`` and ``["grid_sizes"]``). This
module turns an embedding, a mode and a strength into ``(q/k input, v input)`` for such a call, with the embeddings
prepared exactly as the diffusers path prepares them (:func:`~motion_core.embedding.prepare_for_sampling`, cached per
grid) and added by the shared :func:`~motion_core.motion_math.motion_inputs`. Nothing here imports ComfyUI.
"""

from __future__ import annotations

import re

import torch

from ..comfy_layout import COMFY_WAN_PATCH_SIZE
from ..embedding import MotionEmbedding, PreparedMotion, prepare_for_sampling
from ..errors import InvalidSettingError
from ..motion_math import TokenLayout, motion_inputs
from ..motion_sites import TemporalBlock

_BLOCK_NAME = re.compile(r"^blocks\.(\d+)$")


class WanBlockMotion:
    """An embedding applied to a Wan transformer's self-attention, addressed by block index.

    Args:
        embedding: a Wan embedding (family ``wan``; sites named ``blocks.i``).
        mode: ``object`` / ``camera`` / ``raw`` (already resolved: not the embedding-default marker).
        strength: scales both embeddings, as in :func:`prepare_for_sampling`.
        patch: the transformer's spatial patch ``(ph, pw)``; the latent grid is the token grid times it (default:
            the (2, 2) ComfyUI fixes for Wan, :data:`~motion_core.comfy_layout.COMFY_WAN_PATCH_SIZE`).
    """

    def __init__(self, embedding: MotionEmbedding, mode: str, strength: float,
                 patch: tuple[int, int] = COMFY_WAN_PATCH_SIZE[1:]) -> None:
        if embedding.info.family != "wan":
            raise InvalidSettingError(
                f"This motion embedding was trained on a {embedding.info.family} model; a Wan model needs one trained "
                "on a Wan model (Train Motion Embedding on a Wan folder or MODEL)."
            )
        self.embedding = embedding
        self.mode = mode
        self.strength = float(strength)
        self.patch = tuple(patch)
        self._sites: dict[int, TemporalBlock] = {}
        for block in embedding.info.blocks:
            match = _BLOCK_NAME.match(block.name)
            if match is None:
                raise InvalidSettingError(f"Motion embedding site {block.name!r} is not a Wan transformer block (blocks.i).")
            self._sites[int(match.group(1))] = block
        self._prepared: dict[tuple[int, int, int, str], PreparedMotion] = {}

    @property
    def block_indices(self) -> list[int]:
        """The transformer blocks whose self-attention gets embeddings, ascending."""
        return sorted(self._sites)

    def channels(self, block_index: int) -> int:
        """The attention width C the embedding of block ``block_index`` was trained for."""
        return self._sites[block_index].channels

    def prepared(self, token_grid: tuple[int, int, int], device: torch.device) -> PreparedMotion:
        """The embeddings resampled to ``token_grid`` ``(F', h, w)`` with mode and strength applied (cached)."""
        frames, height, width = (int(n) for n in token_grid)
        key = (frames, height, width, str(device))
        if key not in self._prepared:
            self._prepared[key] = prepare_for_sampling(
                self.embedding.to(device), frames, height * self.patch[0], width * self.patch[1], self.mode, self.strength
            )
        return self._prepared[key]

    def inputs(self, block_index: int, hidden: torch.Tensor, token_grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q/k input, v input)`` of block ``block_index``'s self-attention.

        Args:
            hidden: the self-attention input ``(B, F'*h*w, C)``, frame-major tokens.
            token_grid: ``(F', h, w)`` of this call.

        A block without embeddings gets ``(hidden, hidden)``.
        """
        site = self._sites.get(block_index)
        if site is None:
            return hidden, hidden
        frames, height, width = (int(n) for n in token_grid)
        if hidden.shape[1] != frames * height * width:
            raise InvalidSettingError(
                f"Wan block {block_index} runs {hidden.shape[1]} tokens, not the {frames}x{height}x{width} of its token grid."
            )
        prepared = self.prepared((frames, height, width), hidden.device)
        value_grid = site.grid(height * self.patch[0], width * self.patch[1])
        layout = TokenLayout(frames, (height, width), frames_outer=True)
        return motion_inputs(hidden, prepared.query_key.get(site.name), prepared.value.get(site.attention_names[0]), value_grid, layout)
