"""Nodes over ComfyUI's own MODEL (the native path): a motion embedding on a Wan MODEL from core's loaders."""

from __future__ import annotations

from ..motion_core.defaults import field_default
from ..motion_core.embedding import EMBEDDING_DEFAULT_MODE, MODE_CHOICES, MotionEmbedding, resolve_mode
from ..motion_core.families.wan_native import WanBlockMotion
from ..motion_core.sampling import AppliedMotion
from .handles import CATEGORY, EMBEDDING_TYPE
from .native_wan import patch_wan_model


class ApplyMotionEmbeddingNative:
    DESCRIPTION = (
        "Applies a Wan motion embedding to a MODEL from ComfyUI's own loaders (Load Diffusion Model), for the core "
        "KSampler and the other samplers downstream. Returns a patched clone: the MODEL it gets is never changed, and "
        "LoRAs and attention speed-ups on it keep working."
    )
    CATEGORY = f"{CATEGORY}/native"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan 2.1/2.2 model from Load Diffusion Model (the one the embedding was trained on, or one of the same architecture)."}),
                "motion_embedding": (EMBEDDING_TYPE, {"tooltip": "A motion embedding trained on a Wan model."}),
                "strength": ("FLOAT", {"default": field_default(AppliedMotion, "strength"), "min": -4.0, "max": 4.0, "step": 0.05, "tooltip": "Scales the embeddings (1: as trained; 0: the MODEL unchanged)."}),
                "mode": (list(MODE_CHOICES), {"default": EMBEDDING_DEFAULT_MODE, "tooltip": "embedding default: the mode the embedding was trained for. object: frame-differenced value embedding (keeps motion, drops the reference's look). camera: query-key only. raw: as trained (may copy the reference's look)."}),
            }
        }

    def apply(self, model, motion_embedding: MotionEmbedding, strength: float, mode: str):
        if float(strength) == 0.0:
            return (model,)
        motion = WanBlockMotion(motion_embedding, resolve_mode(mode, motion_embedding.info), float(strength))
        return (patch_wan_model(model, motion),)
