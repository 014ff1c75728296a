"""Save, load and apply motion embeddings."""

from __future__ import annotations

from dataclasses import replace

from ..motion_core.defaults import field_default
from ..motion_core.embedding import EMBEDDING_DEFAULT_MODE, MODE_CHOICES, MotionEmbedding, check_fits, resolve_mode
from ..motion_core.embedding_file import load_embedding, save_embedding
from ..motion_core.errors import EmbeddingFileError
from ..motion_core.safe_paths import unique_output_path
from ..motion_core.sampling import AppliedMotion
from . import comfy_bridge
from .embedding_facts import embedding_facts
from .handles import CATEGORY, EMBEDDING_PREFIX, EMBEDDING_TYPE, MODEL_TYPE, MotionModel


class SaveMotionEmbedding:
    DESCRIPTION = (
        "Saves a motion embedding as .safetensors in models/motion_embeddings (written atomically), without the "
        "optimiser state used for resuming (Train Motion Embedding's own periodic and interrupted saves keep that)."
    )
    CATEGORY = f"{CATEGORY}/embeddings"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion_embedding": (EMBEDDING_TYPE, {"tooltip": "The embedding to save."}),
                "filename_prefix": ("STRING", {"default": EMBEDDING_PREFIX, "tooltip": "File name under models/motion_embeddings; subfolders allowed, nothing outside it."}),
            }
        }

    def save(self, motion_embedding: MotionEmbedding, filename_prefix: str):
        path = unique_output_path(comfy_bridge.embedding_save_dir(), filename_prefix, ".safetensors")
        # A file to keep or share: the optimiser state (3x the embedding's size) stays out of it; the training
        # node's own periodic and interrupted saves are the files that carry it for resuming.
        save_embedding(replace(motion_embedding, training_state={}), path)
        return {"ui": {"motion_embedding": [embedding_facts(motion_embedding, path.name)]}}


class LoadMotionEmbedding:
    DESCRIPTION = "Loads a motion embedding (.safetensors) from models/motion_embeddings. Never unpickles anything."
    CATEGORY = f"{CATEGORY}/embeddings"
    RETURN_TYPES = (EMBEDDING_TYPE,)
    RETURN_NAMES = ("motion_embedding",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = list(comfy_bridge.list_embeddings()) or ["(no motion embedding saved yet)"]
        return {"required": {"embedding": (names, {"tooltip": "A file in models/motion_embeddings."})}}

    @classmethod
    def IS_CHANGED(cls, embedding: str):
        path = comfy_bridge.list_embeddings().get(embedding)
        return path.stat().st_mtime_ns if path is not None and path.exists() else float("nan")

    def load(self, embedding: str):
        path = comfy_bridge.list_embeddings().get(embedding)
        if path is None:
            raise EmbeddingFileError(f"Motion embedding {embedding!r} was not found in models/motion_embeddings.")
        loaded = load_embedding(path)
        return {"ui": {"motion_embedding": [embedding_facts(loaded, path.name)]}, "result": (loaded,)}


class ApplyMotionEmbedding:
    DESCRIPTION = (
        "Applies a motion embedding to a video model for the samplers downstream. The loaded model itself is "
        "never changed: other branches of the graph still see the plain model."
    )
    CATEGORY = f"{CATEGORY}/embeddings"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The model the embedding was trained on (or one of the same architecture)."}),
                "motion_embedding": (EMBEDDING_TYPE, {"tooltip": "The motion to transfer."}),
                "strength": ("FLOAT", {"default": field_default(AppliedMotion, "strength"), "min": -4.0, "max": 4.0, "step": 0.05, "tooltip": "Scales the embeddings (1: as trained). 0 gives the plain model: no embedding and no start from the reference's inverted latent."}),
                "mode": (list(MODE_CHOICES), {"default": EMBEDDING_DEFAULT_MODE, "tooltip": "embedding default: the mode the embedding recommends (camera for the debiased hybrid loss, else raw; object in files from before 2026-12-03). raw: both embeddings as trained, the most motion; with end percent below 1 the last steps restore the prompt's look (at 1 it copies the reference's look). object: the frame-differenced value embedding. centred: the value embedding minus its mean over the frames (the paper's alternative). camera: query-key only, the weakest motion."}),
            },
            # optional, so that workflows saved before these widgets existed still load and queue unchanged
            "optional": {
                "start_percent": ("FLOAT", {"default": field_default(AppliedMotion, "start_percent"), "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "The embeddings act from this share of the sampling steps on (as ControlNet's start percent). 0: from the first step."}),
                "end_percent": ("FLOAT", {"default": field_default(AppliedMotion, "end_percent"), "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "The embeddings act up to this share of the sampling steps (as ControlNet's end percent). Motion and layout are set in the early steps; the late steps left to the prompt keep its look (default 0.5: the measured best on the UNet3D, AnimateDiff and Latte toy models). 1: to the last step."}),
            },
        }

    def apply(self, model: MotionModel, motion_embedding: MotionEmbedding, strength: float, mode: str,
              start_percent: float = field_default(AppliedMotion, "start_percent"),
              end_percent: float = field_default(AppliedMotion, "end_percent")):
        video_model = model.model
        check_fits(motion_embedding.info, video_model.family, video_model.family.find_sites(video_model.denoiser), video_model.name,
                   architecture=video_model.identity.get("architecture"))
        motion = AppliedMotion(motion_embedding, float(strength), resolve_mode(mode, motion_embedding.info),
                               float(start_percent), float(end_percent))
        motion.validate()
        return (MotionModel(video_model, motion),)
