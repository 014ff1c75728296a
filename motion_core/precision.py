"""Mixed precision for the denoiser of a half-precision model (shared by every family)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .model_loading import VideoModel

HALF_DTYPES = (torch.float16, torch.bfloat16)


def autocast(model: VideoModel) -> torch.autocast:
    """Mixed precision for the denoiser of a half-precision model (a no-op for fp32 models).

    Matrix products and convolutions run in the model's dtype, reductions such as norms and softmax in fp32,
    and fp32 tensors (the motion embeddings, the LoRA) meet the half-precision weights without manual casts.
    """
    half = model.dtype in HALF_DTYPES
    return torch.autocast(model.device.type, dtype=model.dtype if half else torch.bfloat16, enabled=half)
