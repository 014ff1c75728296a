"""Older import path of UNet3D gradient checkpointing (now :mod:`motion_core.families.unet3d_checkpointing`)."""

from .families.unet3d_checkpointing import LAYER_LISTS, checkpoint_units, gradient_checkpointing

__all__ = ["LAYER_LISTS", "checkpoint_units", "gradient_checkpointing"]
