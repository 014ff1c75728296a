"""MI_TrainMotionEmbedding: learn motion embeddings from a reference clip, with progress, live loss and Cancel."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..motion_core.defaults import field_default
from ..motion_core.embedding import LOSS_NAMES, MotionEmbedding
from ..motion_core.errors import VideoInputError
from ..motion_core.families import FAMILIES, LAYER_CHOICES
from ..motion_core.loss_plot import render_loss_curve
from ..motion_core.memory_estimate import estimate_training_bytes
from ..motion_core.model_loading import VideoModel
from ..motion_core.recommended_settings import resolve_recommended
from ..motion_core.safe_paths import unique_output_path
from ..motion_core.training import CHECKPOINTING_CHOICES, INVERSION_CHOICES, StepCallback, TrainingConfig, train_motion_embedding
from . import comfy_bridge
from .auto_widgets import AUTO, AUTO_FRAME_COUNT, AUTO_LAYERS, auto_tooltip, given
from .embedding_facts import embedding_facts
from .frames_prep import prepare_training_frames
from .handles import CATEGORY, EMBEDDING_PREFIX, EMBEDDING_TYPE, MODEL_TYPE, MotionModel

logger = logging.getLogger(__name__)
LAYERS_TOOLTIP = " ".join(f"{f.name} models: {f.layer_set_help}" for f in FAMILIES)
LOSS_EVENT = "motion_inversion.loss"


def _default(name: str) -> Any:
    return field_default(TrainingConfig, name)


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    """Whether ``tensor`` is on ``device`` ("cuda" and "cuda:0" count as the same when one has no index)."""
    place = tensor.device
    return place.type == device.type and (place.index is None or device.index is None or place.index == device.index)


def _model_bytes_off(model: VideoModel, device: torch.device) -> int:
    """Bytes of the model's weights that are not on ``device`` yet (0 once it is loaded there)."""
    total = 0
    for module in model.modules():
        for tensor in [*module.parameters(), *module.buffers()]:
            if not _on(tensor, device):
                total += tensor.numel() * tensor.element_size()
    return total


def training_room(model: VideoModel, clip: torch.Tensor, config: TrainingConfig) -> int:
    """Bytes a run on ``clip`` ``(F, H, W, 3)`` needs on the model's device: the activation estimate plus the
    model's weights where they are not there yet. ``auto`` checkpointing asks for room to train without it."""
    latent_h, latent_w = model.latent_size(clip.shape[2], clip.shape[1])
    checkpointing = config.gradient_checkpointing == "on"
    frames = model.family.latent_frames(model.family.round_frames(clip.shape[0]))
    need = estimate_training_bytes(model, frames, latent_h, latent_w, checkpointing, config.layer_set)
    return need + _model_bytes_off(model, model.device)


def step_reporter(total: int, unique_id: str | None, dynprompt: Any) -> StepCallback:
    """The ``on_step`` of a training node: progress bar, live loss to the browser (the web extension's chart), and
    Cancel (raised from the progress update, which the trainer turns into a save of what was trained)."""
    progress = comfy_bridge.Progress(total, unique_id)
    # The id the browser finds the node by: a subgraph path like "5:3"; an expanded node is shown by its parent.
    display_node = dynprompt.get_display_node_id(unique_id) if dynprompt is not None and unique_id is not None else unique_id

    def on_step(done: int, steps: int, value: float) -> None:
        event = {"node": unique_id, "display_node": display_node, "step": done, "total": steps, "loss": value}
        comfy_bridge.send_event(LOSS_EVENT, event)
        progress.update(done)

    return on_step


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
                "steps": ("INT", {"default": AUTO, "min": AUTO, "max": 100_000, "tooltip": auto_tooltip("Optimisation steps.", "train", "steps")}),
                "learning_rate": ("FLOAT", {"default": float(AUTO), "min": float(AUTO), "max": 10.0, "step": 0.001, "tooltip": auto_tooltip("AdamW learning rate of the embeddings.", "train", "learning_rate")}),
                "loss": (list(LOSS_NAMES), {"default": _default("loss"), "tooltip": "base: plain diffusion loss. debiased_temporal: for objects that deform a lot. debiased_hybrid: for camera motion (adds a temporary spatial LoRA)."}),
                "layers": (list(LAYER_CHOICES), {"default": AUTO_LAYERS, "tooltip": "auto: the model's recommended layer set (its motion_inversion.json, else its family's default). " + LAYERS_TOOLTIP}),
                "width": ("INT", {"default": AUTO, "min": AUTO, "max": 4096, "step": 8, "tooltip": auto_tooltip("Training width; frames are resized (crop) and the size rounded to what the model accepts.", "train", "width")}),
                "height": ("INT", {"default": AUTO, "min": AUTO, "max": 4096, "step": 8, "tooltip": auto_tooltip("Training height.", "train", "height")}),
                "frame_count": ("INT", {"default": AUTO_FRAME_COUNT, "min": AUTO_FRAME_COUNT, "max": 1024, "tooltip": auto_tooltip("Frames to train on (the first ones); 0 uses every frame given.", "train", "frames", AUTO_FRAME_COUNT)}),
                "seed": ("INT", {"default": _default("seed"), "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Seed of the noise and timesteps drawn at each step."}),
                "gradient_checkpointing": (list(CHECKPOINTING_CHOICES), {"default": _default("gradient_checkpointing"), "tooltip": "Recompute activations in the backward pass: much less memory, slower. auto: on only when the memory estimate says training would not fit without it."}),
                "save_every": ("INT", {"default": _default("save_every"), "min": 0, "max": 100_000, "tooltip": "Also save the embedding every n steps (0: only at the end). Cancel always saves what was trained."}),
                "filename_prefix": ("STRING", {"default": EMBEDDING_PREFIX, "tooltip": "File name under models/motion_embeddings; subfolders allowed, nothing outside it."}),
            },
            "optional": {
                "resume_from": (EMBEDDING_TYPE, {"tooltip": "Continue training this embedding (same model, size and frames) up to 'steps': from this node's output, or a file saved periodically or on Cancel (Load Motion Embedding). The optimiser state travels with the embedding, so the result equals an uninterrupted run."}),
                # Optional so that prompts saved before it existed still validate; a widget all the same (after the others).
                "inversion": (list(INVERSION_CHOICES), {"default": _default("inversion"), "tooltip": "Which model inverts the reference into the start latent stored with the embedding. plain: the plain model, as the paper's code does. embedded: the model with the trained embeddings."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "dynprompt": "DYNPROMPT"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, gradient_checkpointing):
        """Workflows saved before ``auto`` existed hold true/false here: they still mean on/off.

        ComfyUI skips its own checks for the inputs this method takes, so it takes only this one.
        """
        if gradient_checkpointing is None or isinstance(gradient_checkpointing, bool):  # None: fed by a link
            return True
        if gradient_checkpointing in CHECKPOINTING_CHOICES:
            return True
        return f"gradient_checkpointing must be one of {', '.join(CHECKPOINTING_CHOICES)}, got {gradient_checkpointing!r}."

    def train(self, model: MotionModel, frames, prompt: str, steps: int, learning_rate: float, loss: str, layers: str,
              width: int, height: int, frame_count: int, seed: int, gradient_checkpointing: str | bool, save_every: int,
              filename_prefix: str, resume_from: MotionEmbedding | None = None, inversion: str = _default("inversion"),
              unique_id: str | None = None, dynprompt: Any = None):
        video_model = model.model
        wanted = {"width": given(width, AUTO), "height": given(height, AUTO), "frames": given(frame_count, AUTO_FRAME_COUNT),
                  "steps": given(steps, AUTO), "learning_rate": given(learning_rate, AUTO), "layers": given(layers, AUTO_LAYERS)}
        chosen = resolve_recommended(video_model.recommended, "train", wanted, video_model.name)
        if wanted["frames"] is None and isinstance(frames, torch.Tensor) and 0 < frames.shape[0] < chosen["frames"]:
            raise VideoInputError(
                f"The reference has {frames.shape[0]} frames but {video_model.name}'s recommended training frame count is "
                f"{chosen['frames']}; set frame_count to {frames.shape[0]} or fewer (0 uses every frame), or load more frames."
            )
        clip = prepare_training_frames(frames, chosen["width"], chosen["height"], chosen["frames"], video_model.size_multiple)
        config = TrainingConfig(prompt=prompt, steps=chosen["steps"], learning_rate=chosen["learning_rate"], loss=loss,
                                layer_set=chosen["layers"], seed=seed, gradient_checkpointing=gradient_checkpointing,
                                save_every=save_every, inversion=inversion)
        config.validate()
        path = unique_output_path(comfy_bridge.embedding_save_dir(), filename_prefix, ".safetensors")
        on_step = step_reporter(config.steps, unique_id, dynprompt)
        inversion_progress = comfy_bridge.Progress(config.inversion_steps, unique_id)
        comfy_bridge.free_comfy_memory(training_room(video_model, clip, config), video_model.device)
        with comfy_bridge.autograd_enabled():
            result = train_motion_embedding(video_model, clip.clone(), config, path, resume_from, on_step,
                                            lambda done, _total: inversion_progress.update(done))
        logger.info("Motion embedding trained in %s", {k: round(v, 2) for k, v in result.timings.items()})
        facts = embedding_facts(result.embedding, path.name)
        return {"ui": {"motion_embedding": [facts]}, "result": (result.embedding, render_loss_curve(result.losses))}
