"""Short facts about an embedding, shown on nodes by the web extension and in logs."""

from __future__ import annotations

from typing import Any

from ..motion_core.embedding import MotionEmbedding


def embedding_facts(embedding: MotionEmbedding, file_name: str | None = None) -> dict[str, Any]:
    """JSON-friendly summary: family, base model, training size, frames, steps, loss, default mode."""
    info = embedding.info
    facts: dict[str, Any] = {
        "family": info.family,
        "base_model": info.base_model.get("name", "?"),
        "resolution": f"{info.train_width}x{info.train_height}",
        "frames": info.train_frames,
        "steps": info.steps,
        "loss": info.loss,
        "mode": info.default_mode,
        "layers": len(info.blocks),
        "inverted_latent": embedding.inverted_latent is not None,
    }
    if info.extra.get("interrupted"):
        facts["interrupted"] = True
    if file_name:
        facts["file"] = file_name
    return facts
