"""Training losses for motion embeddings (predictions and targets are ``(B, C, F, h, w)`` latents)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from .embedding import LOSS_NAMES
from .errors import InvalidSettingError

# MotionDirector's debiasing weights: anchor weight b = 1, a = sqrt(b^2 + 1).
ANCHOR_WEIGHT = 1.0
SCALED_WEIGHT = math.sqrt(ANCHOR_WEIGHT**2 + 1.0)


def base_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain MSE in fp32."""
    return F.mse_loss(prediction.float(), target.float())


def debiased_temporal_loss(prediction: torch.Tensor, target: torch.Tensor, anchor: int) -> torch.Tensor:
    """MSE plus an MSE on frames taken relative to the anchor frame ``anchor`` (drawn at random per step).

    ``MSE(p, t) + MSE(a p - b p[:, :, r], a t - b t[:, :, r])``: subtracting the anchor removes what is shared
    by all frames (appearance), so the second term weighs what changes between frames (motion).
    """
    prediction, target = prediction.float(), target.float()
    pred_rel = SCALED_WEIGHT * prediction - ANCHOR_WEIGHT * prediction[:, :, anchor : anchor + 1]
    target_rel = SCALED_WEIGHT * target - ANCHOR_WEIGHT * target[:, :, anchor : anchor + 1]
    return F.mse_loss(prediction, target) + F.mse_loss(pred_rel, target_rel)


def value_static_penalty(values: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean square of the value embeddings' static part, averaged over the embeddings (a training-time penalty).

    Each value embedding is ``(P, N, C)`` (positions, frames, channels); its static part is its mean over the N
    frames, ``(P, C)``, what it adds to every frame alike (appearance rather than motion).
    """
    terms = [value.float().mean(dim=1).square().mean() for value in values]
    if not terms:
        raise InvalidSettingError("The value-static penalty needs value embeddings; this layer set trains none.")
    return torch.stack(terms).mean()


def static_share(values: Iterable[torch.Tensor]) -> float:
    """Share of the value embeddings' energy in their static part: ``sum N |mean_t v|^2 / sum |v|^2`` over all of them.

    0 for embeddings whose every position averages to zero over the frames, 1 for embeddings constant in time
    (NaN when every value is zero). Each value embedding is ``(P, N, C)``.
    """
    static = total = 0.0
    for value in values:
        value = value.detach().double()
        static += float(value.mean(dim=1).square().sum()) * value.shape[1]
        total += float(value.square().sum())
    return static / total if total > 0 else float("nan")


def check_loss_name(name: str) -> str:
    if name not in LOSS_NAMES:
        raise InvalidSettingError(f"Unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}.")
    return name
