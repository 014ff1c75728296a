"""Tiny single files in the layouts ComfyUI / AnimateDiff-Evolved users have, for the single-file loader's tests.

An SD1.5-style checkpoint holds the UNet under ``model.diffusion_model.`` (``input_blocks`` / ``middle_block`` /
``output_blocks``), the VAE under ``first_stage_model.`` (``down.i.block.j``, 1x1-conv attention) and the CLIP text
encoder under ``cond_stage_model.transformer.``. An AnimateDiff motion module holds ``down_blocks.i.motion_modules.j
.temporal_transformer.*`` with ``attention_blocks.0/1``, ``norms.0/1``, ``ff_norm`` and each attention's
``pos_encoder.pe`` position table. The functions here write diffusers models out in those layouts (the inverse of
diffusers' single-file converters), so a test can load them back through the pack's loader and compare.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2", "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0", "conv_out": "out.2",
}
_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_VAE_FIXED = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _rename(rest: str, pairs: tuple[tuple[str, str], ...]) -> str:
    head, _, leaf = rest.rpartition(".")
    for new, old in pairs:
        if head == new:
            return f"{old}.{leaf}"
    return rest


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A ``UNet2DConditionModel`` state dict in SD1.5's checkpoint layout (keys under :data:`UNET_PREFIX`)."""
    layers = int(config["layers_per_block"])
    with_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        head, _, leaf = key.rpartition(".")
        if head in _UNET_FIXED:
            new = f"{_UNET_FIXED[head]}.{leaf}"
        elif match := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            i, kind, j, rest = int(match[1]), match[2], int(match[3]), match[4]
            index = 1 + i * (layers + 1) + j
            new = f"input_blocks.{index}.0.{_rename(rest, _RESNET)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
        elif match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{(int(match[1]) + 1) * (layers + 1)}.0.op.{match[2]}"
        elif match := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
            kind, index, rest = match[1], int(match[2]), match[3]
            new = f"middle_block.{2 * index}.{_rename(rest, _RESNET)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif match := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            i, kind, j, rest = int(match[1]), match[2], int(match[3]), match[4]
            index = i * (layers + 1) + j
            new = f"output_blocks.{index}.0.{_rename(rest, _RESNET)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
        elif match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            i = int(match[1])
            new = f"output_blocks.{i * (layers + 1) + layers}.{2 if with_attention[i] else 1}.conv.{match[2]}"
        else:
            raise KeyError(f"no SD1.5 checkpoint key for UNet parameter {key}")
        out[UNET_PREFIX + new] = tensor
    return out


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An ``AutoencoderKL`` state dict in SD1.5's checkpoint layout (keys under :data:`VAE_PREFIX`)."""
    levels = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        head, _, leaf = key.rpartition(".")
        if head in _VAE_FIXED:
            new = f"{_VAE_FIXED[head]}.{leaf}"
        elif match := re.fullmatch(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            part, kind, i, j, rest = match[1], match[2], int(match[3]), match[4], match[5]
            level = i if kind == "down" else levels - 1 - i
            new = f"{part}.{kind}.{level}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        elif match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"encoder.down.{match[1]}.downsample.conv.{match[2]}"
        elif match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            new = f"decoder.up.{levels - 1 - int(match[1])}.upsample.conv.{match[2]}"
        elif match := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif match := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            new = f"{match[1]}.mid.attn_1.{_rename(match[2], _VAE_ATTENTION)}"
            if tensor.ndim == 2:  # SD's VAE attention projections are 1x1 convolutions
                tensor = tensor[:, :, None, None]
        else:
            new = key  # conv_in / conv_out / quant_conv / post_quant_conv keep their names
        out[VAE_PREFIX + new] = tensor
    return out


def clip_to_ldm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModel`` state dict in SD1.5's checkpoint layout (keys under :data:`CLIP_PREFIX`)."""
    return {CLIP_PREFIX + key: tensor for key, tensor in state.items()}


def adapter_to_original(state: Mapping[str, torch.Tensor], max_frames: int) -> dict[str, torch.Tensor]:
    """A diffusers ``MotionAdapter`` state dict in the original motion-module layout, with the sinusoidal position
    table each attention carries there (``pos_encoder.pe`` ``(1, max_frames, C)``; the loader reads its length)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new = (re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key, count=1)
               .replace(".attn1.", ".attention_blocks.0.").replace(".attn2.", ".attention_blocks.1.")
               .replace(".norm1.", ".norms.0.").replace(".norm2.", ".norms.1.").replace(".norm3.", ".ff_norm."))
        out[new] = tensor
        if match := re.fullmatch(r"(.+\.attention_blocks\.\d)\.to_q\.weight", new):
            out[f"{match[1]}.pos_encoder.pe"] = torch.zeros(1, max_frames, tensor.shape[1])
    return out


def save_single_files(parts: Mapping[str, Any], checkpoint: str | Path, motion_module: str | Path) -> tuple[Path, Path]:
    """Write an ``AnimateDiffPipeline``'s parts (``unet`` = the SD ``UNet2DConditionModel``, ``vae``, ``text_encoder``,
    ``motion_adapter``) as an SD1.5-layout checkpoint and an original-layout motion module (safetensors)."""
    from safetensors.torch import save_file

    unet, vae, text_encoder, adapter = parts["unet"], parts["vae"], parts["text_encoder"], parts["motion_adapter"]
    combined = {**unet_to_ldm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config),
                **clip_to_ldm(text_encoder.state_dict())}
    save_file({k: v.contiguous() for k, v in combined.items()}, str(checkpoint))
    module = adapter_to_original(adapter.state_dict(), int(adapter.config.motion_max_seq_length))
    save_file({k: v.contiguous() for k, v in module.items()}, str(motion_module))
    return Path(checkpoint), Path(motion_module)


def save_part_configs(parts: Mapping[str, Any], folder: str | Path) -> Path:
    """The part configs of an ``AnimateDiffPipeline``'s parts in the layout of ``motion_core/configs/sd15`` (and the
    tokenizer in ``tokenizer/``), so the single-file loader can be pointed at a tiny model's."""
    import json

    folder = Path(folder)
    configs = {"unet": dict(parts["unet"].config), "vae": dict(parts["vae"].config),
               "motion_adapter": dict(parts["motion_adapter"].config), "text_encoder": parts["text_encoder"].config.to_dict()}
    for part, config in configs.items():
        (folder / part).mkdir(parents=True, exist_ok=True)
        (folder / part / "config.json").write_text(json.dumps(config, indent=2, default=list))
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(dict(parts["scheduler"].config), indent=2, default=list))
    parts["tokenizer"].save_pretrained(str(folder / "tokenizer"))
    return folder
