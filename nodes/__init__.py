"""ComfyUI nodes of the Motion Inversion pack: thin adapters over ``motion_core``."""

from __future__ import annotations

from . import comfy_bridge
from .embedding_nodes import ApplyMotionEmbedding, LoadMotionEmbedding, SaveMotionEmbedding
from .model_nodes import LoadAnimateDiffModel, LoadVideoModel
from .native_nodes import ApplyMotionEmbeddingNative, EncodePromptWithModel, MotionStartNoiseNode, TrainMotionEmbeddingNative
from .sampler_nodes import MotionSampler
from .training_nodes import TrainMotionEmbedding
from .video_nodes import LoadVideoFrames

comfy_bridge.register_folders()

# Node ids are part of every saved workflow: never rename or remove one.
NODE_CLASS_MAPPINGS = {
    "MI_LoadVideoModel": LoadVideoModel,
    "MI_LoadVideoFrames": LoadVideoFrames,
    "MI_TrainMotionEmbedding": TrainMotionEmbedding,
    "MI_SaveMotionEmbedding": SaveMotionEmbedding,
    "MI_LoadMotionEmbedding": LoadMotionEmbedding,
    "MI_ApplyMotionEmbedding": ApplyMotionEmbedding,
    "MI_MotionSampler": MotionSampler,
    "MI_ApplyMotionEmbeddingNative": ApplyMotionEmbeddingNative,
    "MI_MotionStartNoise": MotionStartNoiseNode,
    "MI_EncodePromptWithModel": EncodePromptWithModel,
    "MI_TrainMotionEmbeddingNative": TrainMotionEmbeddingNative,
    "MI_LoadAnimateDiffModel": LoadAnimateDiffModel,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "MI_LoadVideoModel": "Load Video Model (Motion Inversion)",
    "MI_LoadVideoFrames": "Load Video Frames (Motion Inversion)",
    "MI_TrainMotionEmbedding": "Train Motion Embedding",
    "MI_SaveMotionEmbedding": "Save Motion Embedding",
    "MI_LoadMotionEmbedding": "Load Motion Embedding",
    "MI_ApplyMotionEmbedding": "Apply Motion Embedding",
    "MI_MotionSampler": "Motion Sampler",
    "MI_ApplyMotionEmbeddingNative": "Apply Motion Embedding (native MODEL)",
    "MI_MotionStartNoise": "Motion Start Noise (native)",
    "MI_EncodePromptWithModel": "Encode Prompt with Video Model (native)",
    "MI_TrainMotionEmbeddingNative": "Train Motion Embedding (native MODEL)",
    "MI_LoadAnimateDiffModel": "Load AnimateDiff Model (checkpoint + motion module)",
}
