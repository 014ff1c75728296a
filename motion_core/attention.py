"""Attention kernels and the motion attention processor installed on temporal attention layers.

The processor implements, per temporal attention layer,
``softmax(Wq(F + m_qk) (Wk(F + m_qk))^T / sqrt(d)) Wv(F + m_v)`` where ``F`` are the layer-normalised
hidden states ``(B*h*w, N, C)``, ``m_qk`` the block's query-key embedding ``(1, N, C)`` and ``m_v`` the layer's
value embedding ``(h*w, N, C)`` tiled over the batch. It is an ``nn.Module`` so that, while installed,
the embeddings it holds are ordinary parameters of the model (the diffusers pattern for trainable processors).
"""

from __future__ import annotations

import functools
import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidSettingError
from .motion_math import TokenLayout, attach_embeddings, motion_inputs

logger = logging.getLogger(__name__)

AttentionKernel = Literal["matmul", "sdpa", "xformers"]
ATTENTION_CHOICES = ("auto", "sdpa", "matmul", "xformers")

# xformers' memory-efficient kernel fails for a batch*heads of 65,536 or more; temporal attention at high
# resolution folds every latent position into the batch, so split the batch below that.
XFORMERS_MAX_BATCH_HEADS = 65535


@functools.cache
def xformers_available() -> bool:
    """Whether ``xformers.ops.memory_efficient_attention`` can be imported."""
    try:
        import xformers.ops  # noqa: F401
    except Exception:  # ImportError, or a broken binary wheel raising anything at import
        return False
    return True


def resolve_kernel(requested: str, device: torch.device) -> AttentionKernel:
    """Pick the attention kernel for ``requested`` (one of :data:`ATTENTION_CHOICES`) on ``device``.

    ``auto`` chooses plain matmul on CPU (faster than SDPA for the short frame sequences of temporal
    attention there; see ``benchmarks/bench_attention.py``), xformers on CUDA when importable, else SDPA.
    """
    if requested not in ATTENTION_CHOICES:
        raise InvalidSettingError(f"Unknown attention {requested!r}; choose one of {', '.join(ATTENTION_CHOICES)}.")
    if requested == "xformers":
        if device.type != "cuda" or not xformers_available():
            raise InvalidSettingError("xformers attention needs a CUDA device and the xformers package; choose 'auto' or 'sdpa'.")
        return "xformers"
    if requested in ("sdpa", "matmul"):
        return requested  # type: ignore[return-value]
    if device.type == "cpu":
        return "matmul"
    return "xformers" if device.type == "cuda" and xformers_available() else "sdpa"


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, kernel: AttentionKernel) -> torch.Tensor:
    """Multi-head attention without mask.

    Args:
        query, key, value: ``(batch, seq, heads*head_dim)``; key and value share their sequence length.
        heads: number of heads.
        kernel: which implementation computes it.

    Returns:
        ``(batch, seq_q, heads*head_dim)``.
    """
    batch, seq_q, inner = query.shape
    head_dim = inner // heads
    if kernel == "xformers":
        import xformers.ops as xops

        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, head_dim) for t in (query, key, value))
        step = max(1, XFORMERS_MAX_BATCH_HEADS // heads)
        parts = [xops.memory_efficient_attention(q[i : i + step], k[i : i + step], v[i : i + step]) for i in range(0, batch, step)]
        return torch.cat(parts).reshape(batch, seq_q, inner)
    q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2) for t in (query, key, value))
    if kernel == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        scores = torch.matmul(q, k.transpose(-1, -2)) * (head_dim**-0.5)
        out = torch.matmul(scores.softmax(dim=-1), v)
    return out.transpose(1, 2).reshape(batch, seq_q, inner)


class MotionAttnProcessor(nn.Module):
    """Attention processor for a frames-only attention layer that adds motion embeddings.

    Args:
        query_key: ``(1, N, C)`` query-key embedding of the block, or ``None``. The same tensor (or
            ``nn.Parameter``) is given to the block's ``attn1`` and ``attn2`` processors: it is shared.
        value: ``(h*w, N, C)`` value embedding of this layer, or ``None``.
        kernel: attention implementation (see :func:`resolve_kernel`).
        value_grid: ``(hv, wv)``, the value embedding's grid when it is coarser than the layer's positions
            (Latte's patch grid on large latents); ``None``: the value is at the layer's positions already.
        token_grid: ``(h, w)``, the layer's positions, given with ``value_grid``.

    Parameters are registered as-is (trainable when they are ``nn.Parameter``), buffers otherwise, so the
    processor works for training (fp32 master parameters, cast to the activations' dtype at use) and for
    inference (prepared, resampled tensors).
    """

    def __init__(
        self,
        query_key: torch.Tensor | None,
        value: torch.Tensor | None,
        kernel: AttentionKernel = "sdpa",
        value_grid: tuple[int, int] | None = None,
        token_grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if (value_grid is None) != (token_grid is None):
            raise ValueError("value_grid and token_grid go together")
        self.kernel: AttentionKernel = kernel
        self.enabled = True
        self.value_grid = None if value_grid is None else tuple(value_grid)
        self.token_grid = None if token_grid is None else tuple(token_grid)
        attach_embeddings(self, query_key, value)

    def forward(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        """Self-attention over frames. ``hidden_states``: ``(B*h*w, N, C)`` -> same shape."""
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise RuntimeError("MotionAttnProcessor only handles unmasked frames-only self-attention (B*h*w, N, C).")
        residual = hidden_states
        qk_input = value_input = hidden_states
        if self.enabled:
            layout = TokenLayout(hidden_states.shape[1], self.token_grid, frames_outer=False)
            qk_input, value_input = motion_inputs(hidden_states, self.query_key, self.value, self.value_grid, layout)
        query = attn.to_q(qk_input)
        key = attn.to_k(qk_input)
        value = attn.to_v(value_input)
        out = attend(query, key, value, attn.heads, self.kernel).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class PlainFrameAttnProcessor(MotionAttnProcessor):
    """A :class:`MotionAttnProcessor` without embeddings: used to run untouched temporal layers with the same
    kernel as the patched ones (so timing comparisons and outputs are like for like)."""

    def __init__(self, kernel: AttentionKernel = "sdpa") -> None:
        super().__init__(None, None, kernel)
