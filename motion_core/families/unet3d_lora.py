"""Low-rank adapters on the spatial attention layers, used by the debiased hybrid loss.

With the hybrid loss, a LoRA on every spatial (per-frame) attention layer learns the reference's appearance
from single frames, so the motion embeddings are left with motion. The LoRA is dropped after training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import AttentionKernel, attend


class LowRankDelta(nn.Module):
    """``x -> up(down(x))`` with ``up`` zero-initialised (the delta starts at zero).

    ``forward(x, frozen=True)`` computes the same delta with detached weights: gradient still flows to ``x``
    but none reaches the LoRA weights.
    """

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """``x``: ``(..., in_features)`` -> ``(..., out_features)`` in ``x``'s dtype."""
        down, up = self.down.weight, self.up.weight
        if frozen:
            down, up = down.detach(), up.detach()
        return F.linear(F.linear(x.to(down.dtype), down), up).to(x.dtype)


class SpatialLoRAProcessor(nn.Module):
    """Attention processor adding low-rank deltas to ``to_q``, ``to_k``, ``to_v`` and ``to_out``.

    Args:
        attn: the diffusers ``Attention`` module it will serve (for its projection sizes).
        rank: LoRA rank.
        kernel: attention kernel.

    ``enabled = False`` turns it into the plain attention (the hybrid loss does that on 20 % of steps);
    ``frozen = True`` keeps the deltas in the forward pass but gives the LoRA weights no gradient (the hybrid
    loss's temporal pass: the LoRA learns from the single-frame loss only).
    """

    def __init__(self, attn: nn.Module, rank: int, kernel: AttentionKernel = "sdpa") -> None:
        super().__init__()
        self.kernel: AttentionKernel = kernel
        self.enabled = True
        self.frozen = False
        self.q = LowRankDelta(attn.to_q.in_features, attn.to_q.out_features, rank)
        self.k = LowRankDelta(attn.to_k.in_features, attn.to_k.out_features, rank)
        self.v = LowRankDelta(attn.to_v.in_features, attn.to_v.out_features, rank)
        self.out = LowRankDelta(attn.to_out[0].in_features, attn.to_out[0].out_features, rank)

    def forward(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        """``hidden_states``: ``(B*F, h*w, C)``; ``encoder_hidden_states``: ``(B*F, L, D)`` or ``None``."""
        if attention_mask is not None or hidden_states.ndim != 3:
            raise RuntimeError("SpatialLoRAProcessor handles unmasked (batch, tokens, channels) attention only.")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        if self.enabled:
            query = query + self.q(hidden_states, self.frozen)
            key = key + self.k(context, self.frozen)
            value = value + self.v(context, self.frozen)
        out = attend(query, key, value, attn.heads, self.kernel).to(query.dtype)
        projected = attn.to_out[0](out)
        if self.enabled:
            projected = projected + self.out(out, self.frozen)
        out = attn.to_out[1](projected)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def spatial_attention_names(unet: nn.Module) -> list[str]:
    """Module names of the per-frame (spatial) attention layers: ``*.attentions.*.attn1/attn2``."""
    return [
        name
        for name, module in unet.named_modules()
        if ".attentions." in name and name.endswith(("attn1", "attn2")) and hasattr(module, "set_processor")
    ]
