"""Tiny random Wan 2.1 DiTs and VAEs that ComfyUI can load, built from config, for the converter's tests.

``tiny_models.TINY_WAN_CONFIG`` / ``TINY_WAN_VAE_CONFIG`` (the Wan family's test models) are smaller but not
loadable by ComfyUI (heads of 12, one residual block per VAE level), so the converter refuses them.

:data:`TINY_COMFY_WAN_DIT` has heads of 128 (what ComfyUI's Wan loader assumes) and a ``text_dim`` and
``freq_dim`` ComfyUI cannot infer, so an export must carry them in its metadata. :data:`TINY_WAN_VAE` is an
``AutoencoderKLWan`` with base width 8 and every field ComfyUI's Wan 2.1 VAE loader fixes left at Wan 2.1's value.
Every parameter is perturbed after construction, so that no two weights of one shape are equal (a norm's ones, a
bias's zeros) and a mix-up of names changes the output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

TINY_COMFY_WAN_DIT: dict[str, Any] = {
    "patch_size": (1, 2, 2), "num_attention_heads": 1, "attention_head_dim": 128, "in_channels": 16, "out_channels": 16,
    "text_dim": 32, "freq_dim": 32, "ffn_dim": 64, "num_layers": 2, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 64,
}
TINY_WAN_VAE: dict[str, Any] = {
    "base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
    "temperal_downsample": [False, True, True],
}


def _perturb(model: torch.nn.Module, seed: int, scale: float) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * scale)
    return model.eval()


def build_tiny_wan_transformer(seed: int = 0, **overrides: Any):
    """A random ``WanTransformer3DModel`` from :data:`TINY_COMFY_WAN_DIT` with ``overrides`` (~0.4 M parameters)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return _perturb(WanTransformer3DModel(**{**TINY_COMFY_WAN_DIT, **overrides}), seed, 0.05)


def build_tiny_wan_vae(seed: int = 0, **overrides: Any):
    """A random ``AutoencoderKLWan`` from :data:`TINY_WAN_VAE` with ``overrides`` (~0.9 M parameters)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return _perturb(AutoencoderKLWan(**{**TINY_WAN_VAE, **overrides}), seed + 1, 0.02)


def save_tiny_wan_folder(folder: str | Path, transformer, vae) -> Path:
    """Save ``transformer`` and ``vae`` as the ``transformer/`` and ``vae/`` parts of a diffusers Wan folder."""
    folder = Path(folder)
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    index = {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
             "vae": ["diffusers", "AutoencoderKLWan"]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def save_tiny_comfy_wan_model(folder: str | Path, seed: int = 0) -> Path:
    """A whole tiny Wan text-to-video folder (``WanPipeline`` layout: transformer, VAE, tiny text encoder of width
    ``text_dim``, tokenizer, flow scheduler) whose transformer and VAE ComfyUI can also load once exported with
    ``export_comfy``: for checks that train through Load Video Model's text encoder and ComfyUI's own model at once."""
    from diffusers import WanPipeline

    from .tiny_models import build_tiny_wan_parts

    parts = build_tiny_wan_parts(seed, dict(TINY_COMFY_WAN_DIT))
    parts["transformer"] = build_tiny_wan_transformer(seed)
    parts["vae"] = build_tiny_wan_vae(seed)
    folder = Path(folder)
    WanPipeline(**parts).save_pretrained(folder, safe_serialization=True)
    return folder
