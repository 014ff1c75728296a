"""Older import path of the hybrid loss's spatial LoRA (now :mod:`motion_core.families.unet3d_lora`)."""

from .families.unet3d_lora import LowRankDelta, SpatialLoRAProcessor, spatial_attention_names

__all__ = ["LowRankDelta", "SpatialLoRAProcessor", "spatial_attention_names"]
