"""What flows along the pack's custom links: ``MI_MODEL`` and ``MOTION_EMBEDDING``.

``MI_MODEL`` is a :class:`MotionModel`: the loaded model plus the motion applied to it. Applying an
embedding makes a new handle and never touches the loaded model, so two Apply nodes on one model do not
interfere; the embedding is installed only while a sampler runs. ``MOTION_EMBEDDING`` is a
:class:`motion_core.embedding.MotionEmbedding`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..motion_core.model_loading import VideoModel
from ..motion_core.sampling import AppliedMotion

MODEL_TYPE = "MI_MODEL"
EMBEDDING_TYPE = "MOTION_EMBEDDING"
CATEGORY = "motion_inversion"
EMBEDDING_PREFIX = "motion_inversion/embedding"  # default file name of saved embeddings


@dataclass(frozen=True)
class MotionModel:
    """A loaded model and, optionally, the motion embedding applied to it."""

    model: VideoModel
    motion: AppliedMotion | None = None
