"""Prompt encoding the way Wan-style DiTs (and Latte) expect it: real tokens encoded with an attention mask, padding zeroed.

Wan's pipeline (and ComfyUI's Wan text encoder) pad the prompt to a fixed length and set every position past the
real tokens to exactly zero, so the cross-attention sees the same keys however long the padding is. The toy-world
Wan is trained with this function and the Wan family samples with it, so both see identical text features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Wan 2.1/2.2 use 512 text positions; a tokenizer with a shorter limit (the toy's CLIP, 16) uses its own.
MAX_TEXT_POSITIONS = 512


def text_length(tokenizer, max_positions: int = MAX_TEXT_POSITIONS) -> int:
    """Number of text positions to pad to: the tokenizer's limit, at most ``max_positions``."""
    limit = getattr(tokenizer, "model_max_length", None) or max_positions
    return int(min(limit, max_positions))


def encode_masked_prompts(
    tokenizer, text_encoder: nn.Module, prompts: Sequence[str], max_positions: int = MAX_TEXT_POSITIONS
) -> torch.Tensor:
    """Encode prompts with an attention mask and zero the padded positions.

    Args:
        tokenizer: a transformers tokenizer (CLIP for the toy model, T5/UMT5 for Wan).
        text_encoder: its encoder; called as ``text_encoder(ids, attention_mask=mask)`` and read through
            ``.last_hidden_state``.
        prompts: ``B`` strings ("" is a valid, empty prompt).
        max_positions: the model's text length (512 on Wan, 120 on Latte); a tokenizer with a shorter limit uses its own.

    Returns:
        ``(B, L, D)`` in the encoder's dtype, on its device, with ``L = text_length(tokenizer)`` and rows past each
        prompt's real tokens exactly zero.
    """
    length = text_length(tokenizer, max_positions)
    tokens = tokenizer(
        list(prompts), padding="max_length", max_length=length, truncation=True, return_attention_mask=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    hidden = text_encoder(ids, attention_mask=mask).last_hidden_state
    return hidden * mask.unsqueeze(-1).to(hidden.dtype)
