"""The motion processor for the self-attention (``attn1``) of a Wan transformer block.

Wan's ``attn1`` attends over all video tokens at once, frame-major ``(f, y, x)`` with 3-D RoPE. The processor adds
the query-key embedding ``(1, N', C)`` (one vector per latent frame, broadcast over that frame's h*w tokens) and the
value embedding ``(hv*wv, N', C)`` (bilinearly brought from its value grid to the token grid) to the block's
normalised, timestep-modulated hidden states before ``to_q``/``to_k`` and ``to_v``; then q/k RMSNorm, RoPE and
attention run as diffusers runs them (so zero embeddings give exactly the unpatched output). The token grid is
fixed at construction: training and sampling build processors per run at a known latent size.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidSettingError
from ..motion_math import TokenLayout, attach_embeddings, motion_inputs


def rotate(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE: channel pairs ``(0, 1), (2, 3), ...`` of ``x`` ``(B, L, heads, D)`` rotated by the angle whose cosine
    is at the even and sine at the odd positions of ``freqs_cos``/``freqs_sin`` ``(1, L, 1, D)``."""
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    turned = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    return turned.type_as(x)


class WanMotionAttnProcessor(nn.Module):
    """``attn1`` of a ``WanTransformerBlock`` with motion embeddings.

    Args:
        query_key: ``(1, N', C)`` or ``None`` (an ``nn.Parameter`` while training, a buffer for sampling).
        value: ``(hv*wv, N', C)`` at ``value_grid``, or ``None``.
        value_grid: ``(hv, wv)``, the value embedding's grid.
        token_grid: ``(N', h, w)``, the run's latent frames and token grid (the latent grid over the patch size).

    ``enabled = False`` runs the plain attention. Parameters are registered as-is (trainable when they are
    ``nn.Parameter``), buffers otherwise, as for the UNet3D processor.
    """

    def __init__(
        self,
        query_key: torch.Tensor | None,
        value: torch.Tensor | None,
        value_grid: tuple[int, int],
        token_grid: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.enabled = True
        self.value_grid = tuple(value_grid)
        self.token_grid = tuple(token_grid)
        attach_embeddings(self, query_key, value)

    def motion_inputs(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q/k input, v input)``, each ``(B, N'*h*w, C)``: ``hidden_states`` plus the embeddings."""
        frames, height, width = self.token_grid
        layout = TokenLayout(frames, (height, width), frames_outer=True)
        return motion_inputs(hidden_states, self.query_key, self.value, self.value_grid, layout)

    def forward(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        **_: object,
    ) -> torch.Tensor:
        """``hidden_states``: ``(B, N'*h*w, C)`` -> ``(B, N'*h*w, C)`` (no residual: the block adds it with its gate)."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        if encoder_hidden_states is not None or attention_mask is not None or rotary_emb is None:
            raise RuntimeError("WanMotionAttnProcessor serves Wan self-attention (attn1) only.")
        frames, height, width = self.token_grid
        if hidden_states.shape[1] != frames * height * width:
            raise InvalidSettingError(
                f"This Wan attention layer runs {hidden_states.shape[1]} tokens, but the motion embedding was set up "
                f"for {frames} latent frames of {height}x{width} tokens; sample at the size the processors were built for."
            )
        qk_input, value_input = self.motion_inputs(hidden_states) if self.enabled else (hidden_states, hidden_states)
        query = attn.norm_q(attn.to_q(qk_input)).unflatten(2, (attn.heads, -1))  # RMSNorm over all heads, then RoPE
        key = attn.norm_k(attn.to_k(qk_input)).unflatten(2, (attn.heads, -1))
        value = attn.to_v(value_input).unflatten(2, (attn.heads, -1))
        query, key = rotate(query, *rotary_emb), rotate(key, *rotary_emb)
        out = dispatch_attention_fn(
            query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
            backend=getattr(self, "_attention_backend", None),
        )
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))
