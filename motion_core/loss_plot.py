"""Draw a training loss curve as an image (no plotting library needed)."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over ``window`` values (shorter at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def render_loss_curve(losses: list[float], width: int = 512, height: int = 256) -> torch.Tensor:
    """Loss per step (grey) and its moving average (orange) on a log scale.

    Returns:
        ``(1, height, width, 3)`` float in 0..1 (a ComfyUI IMAGE).
    """
    image = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(image)
    finite = [v for v in losses if math.isfinite(v) and v > 0]
    margin = 28
    if len(finite) >= 2:
        logs = [math.log10(v) for v in finite]
        low, high = min(logs), max(logs)
        span = max(high - low, 1e-6)

        def point(i: int, v: float) -> tuple[float, float]:
            x = margin + (width - 2 * margin) * i / (len(finite) - 1)
            y = height - margin - (height - 2 * margin) * (math.log10(v) - low) / span
            return x, y

        draw.line([point(i, v) for i, v in enumerate(finite)], fill=(110, 110, 110), width=1)
        smooth = moving_average(finite, max(1, len(finite) // 20))
        draw.line([point(i, v) for i, v in enumerate(smooth)], fill=(255, 150, 40), width=2)
        draw.text((margin, 6), f"loss {finite[0]:.4g} -> {smooth[-1]:.4g} (avg), {len(losses)} steps", fill=(230, 230, 230))
        draw.text((4, margin - 10), f"{10**high:.3g}", fill=(160, 160, 160))
        draw.text((4, height - margin), f"{10**low:.3g}", fill=(160, 160, 160))
    else:
        draw.text((margin, height // 2), "not enough steps to draw a loss curve", fill=(230, 230, 230))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).unsqueeze(0)
