"""MI_TrainMotionEmbedding: learn motion embeddings from a reference clip, with progress, live loss and Cancel."""

from __future__ import annotations

import logging

from ..motion_core.embedding import LOSS_NAMES, MotionEmbedding
from ..motion_core.loss_plot import render_loss_curve
from ..motion_core.safe_paths import unique_output_path
from ..motion_core.temporal_layers import LAYER_SETS
from ..motion_core.training import TrainingConfig, train_motion_embedding
from . import comfy_bridge
from .embedding_facts import embedding_facts
from .frames_prep import prepare_training_frames
from .handles import CATEGORY, EMBEDDING_TYPE, MODEL_TYPE, MotionModel

logger = logging.getLogger(__name__)
LOSS_EVENT = "motion_inversion.loss"


class TrainMotionEmbedding:
    DESCRIPTION = (
        "Learns motion embeddings from one reference clip with the video model frozen (Motion Inversion). "
        "The result is saved to models/motion_embeddings; Cancel stops within a step and keeps what was trained."
    )
    CATEGORY = f"{CATEGORY}/training"
    EXPERIMENTAL = True
    RETURN_TYPES = (EMBEDDING_TYPE, "IMAGE")
    RETURN_NAMES = ("motion_embedding", "loss_curve")
    OUTPUT_TOOLTIPS = ("The trained motion embedding (also saved as .safetensors).", "Training loss per step.")
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The video model to learn the motion for (its weights stay frozen)."}),
                "frames": ("IMAGE", {"tooltip": "The reference clip: frames from Load Video Frames or any video loader."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the reference clip shows, e.g. 'a man running on the beach'."}),
                "steps": ("INT", {"default": 400, "min": 1, "max": 100_000, "tooltip": "Optimisation steps (paper: 400)."}),
                "learning_rate": ("FLOAT", {"default": 0.02, "min": 1e-6, "max": 10.0, "step": 0.001, "tooltip": "AdamW learning rate of the embeddings (paper: 0.02; the small demo model needs 0.1)."}),
                "loss": (list(LOSS_NAMES), {"default": "base", "tooltip": "base: plain diffusion loss. debiased_temporal: for objects that deform a lot. debiased_hybrid: for camera motion (adds a temporary spatial LoRA)."}),
                "layers": (list(LAYER_SETS), {"default": "paper", "tooltip": "paper: the deepest temporal blocks (1280-channel on ZeroScope). paper+640 adds the next level. all: every temporal block."}),
                "width": ("INT", {"default": 576, "min": 8, "max": 4096, "step": 8, "tooltip": "Training width; frames are resized (crop) and the size rounded to what the model accepts."}),
                "height": ("INT", {"default": 320, "min": 8, "max": 4096, "step": 8, "tooltip": "Training height."}),
                "frame_count": ("INT", {"default": 24, "min": 0, "max": 1024, "tooltip": "Frames to train on (the first ones); 0 uses every frame given."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Seed of the noise and timesteps drawn at each step."}),
                "gradient_checkpointing": ("BOOLEAN", {"default": True, "tooltip": "Recompute activations in the backward pass: much less memory, a little slower."}),
                "save_every": ("INT", {"default": 100, "min": 0, "max": 100_000, "tooltip": "Also save the embedding every n steps (0: only at the end). Cancel always saves what was trained."}),
                "filename_prefix": ("STRING", {"default": "motion_inversion/embedding", "tooltip": "File name under models/motion_embeddings; subfolders allowed, nothing outside it."}),
            },
            "optional": {
                "resume_from": (EMBEDDING_TYPE, {"tooltip": "Continue training this embedding (same model, size and frames) up to 'steps'."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def train(self, model: MotionModel, frames, prompt: str, steps: int, learning_rate: float, loss: str, layers: str,
              width: int, height: int, frame_count: int, seed: int, gradient_checkpointing: bool, save_every: int,
              filename_prefix: str, resume_from: MotionEmbedding | None = None, unique_id: str | None = None):
        video_model = model.model
        clip = prepare_training_frames(frames, width, height, frame_count, video_model.size_multiple)
        config = TrainingConfig(prompt=prompt, steps=steps, learning_rate=learning_rate, loss=loss, layer_set=layers,
                                seed=seed, gradient_checkpointing=gradient_checkpointing, save_every=save_every)
        config.validate()
        path = unique_output_path(comfy_bridge.embedding_save_dir(), filename_prefix, ".safetensors")
        progress = comfy_bridge.Progress(steps, unique_id)

        def on_step(done: int, total: int, value: float) -> None:
            comfy_bridge.send_event(LOSS_EVENT, {"node": unique_id, "step": done, "total": total, "loss": value})
            progress.update(done)

        inversion_progress = comfy_bridge.Progress(config.inversion_steps, unique_id)
        comfy_bridge.free_comfy_memory()
        with comfy_bridge.autograd_enabled():
            result = train_motion_embedding(video_model, clip.clone(), config, path, resume_from, on_step,
                                            lambda done, _total: inversion_progress.update(done))
        logger.info("Motion embedding trained in %s", {k: round(v, 2) for k, v in result.timings.items()})
        facts = embedding_facts(result.embedding, path.name)
        return {"ui": {"motion_embedding": [facts]}, "result": (result.embedding, render_loss_curve(result.losses))}
