"""The method's two additions, written once for every token layout (UNet3D temporal attention, Wan full attention).

A query-key embedding ``(1, N, C)`` (one vector per frame, no spatial extent) and a value embedding ``(P, N, C)``
(per frame and position) are added to an attention layer's input before its q/k and v projections. The layouts
differ only in how frames and positions fold into ``(batch, sequence, C)``; :class:`TokenLayout` says which.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .embedding import resample_grid
from .errors import InvalidSettingError


@dataclass(frozen=True)
class TokenLayout:
    """How a family's attention input folds frames and positions into ``(batch, sequence, C)``.

    Attributes:
        frames: N, the frames (latent frames on Wan) in the sequence.
        grid: token grid ``(h, w)`` at this site; ``None`` for the frames-inner layout, whose positions are
            folded into the batch (their count comes from the embedding).
        frames_outer: ``False``: ``(B*h*w, N, C)`` (UNet3D temporal attention, sequence = frames);
            ``True``: ``(B, N*h*w, C)`` frame-major (Wan self-attention over all tokens).
    """

    frames: int
    grid: tuple[int, int] | None
    frames_outer: bool


def add_per_frame(hidden: torch.Tensor, embedding: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``hidden + embedding`` broadcast over batch (and, for ``P = 1``, over positions), without copying the embedding.

    Args:
        hidden: ``(B*h*w, N, C)`` or ``(B, N*h*w, C)`` as ``layout`` says.
        embedding: ``(P, N, C)`` with ``P`` 1 (query-key) or ``h*w`` (value at the token grid).
    """
    positions, frames, channels = embedding.shape
    if frames != layout.frames:
        raise InvalidSettingError(
            f"Motion embedding has {frames} frames but the model is running {layout.frames}; "
            "resample the embedding to the sampling frame count first."
        )
    embedding = embedding.to(hidden.dtype)
    if layout.frames_outer:
        if layout.grid is None:
            raise ValueError("a frames-outer token layout needs its token grid")
        area = layout.grid[0] * layout.grid[1]
        if positions not in (1, area):
            raise InvalidSettingError(
                f"Motion embedding covers {positions} latent positions but this layer has {area}; "
                "resample it to the sampling resolution first."
            )
        folded = hidden.view(hidden.shape[0], frames, area, channels)  # frame-major tokens (f, y, x)
        return (folded + embedding.transpose(0, 1)).view_as(hidden)
    if hidden.shape[0] % positions:
        raise InvalidSettingError(
            f"Motion embedding covers {positions} latent positions, which does not divide the "
            f"{hidden.shape[0]} sequences of this layer; resample it to the sampling resolution first."
        )
    folded = hidden.view(-1, positions, frames, hidden.shape[2])
    return (folded + embedding).view_as(hidden)


def motion_inputs(
    hidden: torch.Tensor,
    query_key: torch.Tensor | None,
    value: torch.Tensor | None,
    value_grid: tuple[int, int] | None,
    layout: TokenLayout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs of the q/k projections and of the v projection, with the embeddings added.

    Args:
        hidden: the attention layer's (normalised) input, as ``layout`` says.
        query_key: ``(1, N, C)`` or ``None``.
        value: ``(hv*wv, N, C)`` at ``value_grid``, or ``None``; bilinearly brought to the token grid (in the
            autograd graph, so a value embedding coarser than the tokens trains too). ``value_grid`` ``None``:
            the value is at the token grid already.
    """
    qk_in = hidden if query_key is None else add_per_frame(hidden, query_key, layout)
    if value is None:
        return qk_in, hidden
    if value_grid is not None and layout.grid is not None:
        value = resample_grid(value, value_grid, layout.grid)
    return qk_in, add_per_frame(hidden, value, layout)


def attach_embeddings(processor: nn.Module, query_key: torch.Tensor | None, value: torch.Tensor | None) -> None:
    """Register ``query_key`` and ``value`` on a processor as-is: an ``nn.Parameter`` stays trainable (training keeps
    fp32 masters, cast to the activations' dtype at use); a plain tensor (prepared for sampling) becomes a
    non-persistent buffer, so it follows ``.to()`` but never enters a state dict. ``None`` registers an empty slot."""
    for name, tensor in (("query_key", query_key), ("value", value)):
        if isinstance(tensor, nn.Parameter):
            processor.register_parameter(name, tensor)
        else:
            processor.register_buffer(name, tensor, persistent=False)
