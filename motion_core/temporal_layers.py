"""Older import path of the UNet3D motion sites (now :mod:`motion_core.families.unet3d_layers`)."""

from .families.unet3d_layers import LAYER_SETS, describe_layer_set, find_temporal_blocks, select_temporal_blocks
from .motion_sites import TemporalBlock

__all__ = ["LAYER_SETS", "TemporalBlock", "describe_layer_set", "find_temporal_blocks", "select_temporal_blocks"]
