"""Prompt encoding the way Wan-style DiTs expect it: real tokens encoded with an attention mask, padding zeroed.

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


def text_length(tokenizer) -> int:
    """Number of text positions to pad to: the tokenizer's limit, at most ``MAX_TEXT_POSITIONS``."""
    limit = getattr(tokenizer, "model_max_length", None) or MAX_TEXT_POSITIONS
    return int(min(limit, MAX_TEXT_POSITIONS))


def encode_masked_prompts(tokenizer, text_encoder: nn.Module, prompts: Sequence[str]) -> torch.Tensor:
    """Encode prompts with an attention mask and zero the padded positions.

    Args:
        tokenizer: a transformers tokenizer (CLIP for the toy model, T5/UMT5 for Wan).
        text_encoder: its encoder; called as ``text_encoder(ids, attention_mask=mask)`` and read through
            ``.last_hidden_state``.
        prompts: ``B`` strings ("" is a valid, empty prompt).

    Returns:
        ``(B, L, D)`` in the encoder's dtype, on its device, with ``L = text_length(tokenizer)`` and rows past each
        prompt's real tokens exactly zero.
    """
    length = text_length(tokenizer)
    tokens = tokenizer(
        list(prompts), padding="max_length", max_length=length, truncation=True, return_attention_mask=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    hidden = text_encoder(ids, attention_mask=mask).last_hidden_state
    return hidden * mask.unsqueeze(-1).to(hidden.dtype)
