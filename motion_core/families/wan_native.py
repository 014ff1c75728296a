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
from collections.abc import Mapping, Sequence

import torch

from ..comfy_layout import COMFY_WAN_PATCH_SIZE
from ..embedding import MotionEmbedding, PreparedMotion, prepare_for_sampling
from ..errors import InvalidSettingError
from ..motion_math import TokenLayout, motion_inputs
from ..motion_sites import TemporalBlock

_BLOCK_NAME = re.compile(r"^blocks\.(\d+)$")


class _BlockMotion:
    """Embeddings on a Wan transformer's self-attentions, addressed by block index; subclasses say where the
    tensors of a site come from (:meth:`_tensors`). ``enabled = False`` gives every block its plain input.

    ``sigma_window``: ``(highest, lowest)`` noise level the embeddings act at, both included (what ComfyUI's
    ControlNet makes of start/end percent with ``model_sampling.percent_to_sigma``); ``None``: every noise level.
    """

    def __init__(self, sites: Sequence[TemporalBlock], patch: tuple[int, int]) -> None:
        self.patch = tuple(patch)
        self.enabled = True
        self.sigma_window: tuple[float, float] | None = None
        self._sites: dict[int, TemporalBlock] = {}
        for block in sites:
            match = _BLOCK_NAME.match(block.name)
            if match is None:
                raise InvalidSettingError(f"Motion embedding site {block.name!r} is not a Wan transformer block (blocks.i).")
            self._sites[int(match.group(1))] = block

    @property
    def block_indices(self) -> list[int]:
        """The transformer blocks whose self-attention gets embeddings, ascending."""
        return sorted(self._sites)

    def channels(self, block_index: int) -> int:
        """The attention width C the embedding of block ``block_index`` was trained for."""
        return self._sites[block_index].channels

    def _tensors(self, site: TemporalBlock, token_grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(query_key (1, F', C) or None, value (hv*wv, F', C) or None)`` of ``site`` for a run on ``token_grid``."""
        raise NotImplementedError

    def acts_at(self, sigma: float | None) -> bool:
        """Whether the embeddings act at noise level ``sigma`` (``None``: a call that did not say, e.g. training)."""
        if not self.enabled:
            return False
        if self.sigma_window is None or sigma is None:
            return True
        highest, lowest = self.sigma_window
        return lowest <= sigma <= highest

    def inputs(self, block_index: int, hidden: torch.Tensor, token_grid: tuple[int, int, int],
               sigma: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q/k input, v input)`` of block ``block_index``'s self-attention.

        Args:
            hidden: the self-attention input ``(B, F'*h*w, C)``, frame-major tokens.
            token_grid: ``(F', h, w)`` of this call.
            sigma: the noise level of this call (ComfyUI's ``transformer_options["sigmas"]``), for :attr:`sigma_window`.

        A block without embeddings (or any block while disabled or outside the sigma window) gets ``(hidden, hidden)``.
        """
        site = self._sites.get(block_index)
        if site is None or not self.acts_at(sigma):
            return hidden, hidden
        frames, height, width = (int(n) for n in token_grid)
        if hidden.shape[1] != frames * height * width:
            raise InvalidSettingError(
                f"Wan block {block_index} runs {hidden.shape[1]} tokens, not the {frames}x{height}x{width} of its token grid."
            )
        query_key, value = self._tensors(site, (frames, height, width), hidden.device)
        value_grid = site.grid(height * self.patch[0], width * self.patch[1])
        layout = TokenLayout(frames, (height, width), frames_outer=True)
        return motion_inputs(hidden, query_key, value, value_grid, layout)


class WanBlockMotion(_BlockMotion):
    """A trained embedding applied to a Wan transformer's self-attention (sampling).

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
        super().__init__(embedding.info.blocks, patch)
        self.embedding = embedding
        self.mode = mode
        self.strength = float(strength)
        self._prepared: dict[tuple[int, int, int, str], PreparedMotion] = {}

    def prepared(self, token_grid: tuple[int, int, int], device: torch.device) -> PreparedMotion:
        """The embeddings resampled to ``token_grid`` ``(F', h, w)`` with mode and strength applied (cached)."""
        frames, height, width = (int(n) for n in token_grid)
        key = (frames, height, width, str(device))
        if key not in self._prepared:
            self._prepared[key] = prepare_for_sampling(
                self.embedding.to(device), frames, height * self.patch[0], width * self.patch[1], self.mode, self.strength
            )
        return self._prepared[key]

    def _tensors(self, site: TemporalBlock, token_grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        prepared = self.prepared(token_grid, device)
        return prepared.query_key.get(site.name), prepared.value.get(site.attention_names[0])


class TrainableWanMotion(_BlockMotion):
    """Embeddings being trained, used as they are (raw, no resampling: the run is at the training grid).

    Args:
        sites: the trained sites (``blocks.i``).
        query_key: ``{site name: (1, F', C)}``; value: ``{attention name: (hv*wv, F', C)}`` (``nn.Parameter`` s: the
            autograd graph runs through them).
        token_grid: ``(F', h, w)`` of the training latents over the patch.
        patch: as for :class:`WanBlockMotion`.
    """

    def __init__(self, sites: Sequence[TemporalBlock], query_key: Mapping[str, torch.Tensor], value: Mapping[str, torch.Tensor],
                 token_grid: tuple[int, int, int], patch: tuple[int, int] = COMFY_WAN_PATCH_SIZE[1:]) -> None:
        super().__init__(sites, patch)
        self.query_key = dict(query_key)
        self.value = dict(value)
        self.token_grid = tuple(int(n) for n in token_grid)

    def _tensors(self, site: TemporalBlock, token_grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if tuple(token_grid) != self.token_grid:
            raise InvalidSettingError(
                f"Training runs at the reference's token grid {self.token_grid}, but a call ran {tuple(token_grid)}."
            )
        return self.query_key.get(site.name), self.value.get(site.attention_names[0])
