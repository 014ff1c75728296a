"""Convert a diffusers Wan 2.1 folder's DiT and VAE to the single-file layout ComfyUI's core loaders read.

ComfyUI's *Load Diffusion Model* and *Load VAE* take the original Wan key names (``blocks.0.self_attn.q.weight``,
``decoder.upsamples.4.shortcut.weight``), not diffusers' (``blocks.0.attn1.to_q.weight``,
``decoder.up_blocks.1.resnets.0.conv_shortcut.weight``). The tensors are the same; only the names differ, with one
trap: diffusers' ``norm2`` of a block is the cross-attention norm, which the original code calls ``norm3``.

What ComfyUI can load (checked against ComfyUI 0.33.0, ``comfy/model_detection.py`` and ``comfy/sd.py``):

- DiT: ComfyUI reads ``dim``, ``ffn_dim``, ``num_layers``, ``in_dim`` and ``out_dim`` from the weights, takes
  ``num_heads = dim // 128`` (so heads must be 128 wide) and fixes ``patch_size (1, 2, 2)``. A safetensors
  metadata entry ``config = {"transformer": {...}}`` overrides its guess; ComfyUI never reads ``text_dim`` from the
  weights (it defaults to UMT5-XXL's 4096), so every exported DiT carries ``text_dim`` and ``freq_dim`` there, plus
  ``eps`` and ``cross_attn_norm`` where they differ from Wan 2.1's. (diffusers 0.42 ignores its ``qk_norm`` field:
  every ``WanAttention`` has q/k RMSNorms across all heads, which is ComfyUI's ``qk_norm=True``.)
- VAE: ComfyUI reads the base width from ``decoder.head.0.gamma`` and fixes ``z_dim 16``, ``dim_mult [1, 2, 4, 4]``,
  ``num_res_blocks 2``, no attention scales and temporal downsampling ``[False, True, True]``; it normalises latents
  with Wan 2.1's fixed 16 means and stds. A VAE that differs in any of these would load wrongly or not at all, so
  it is refused, as is a DiT ComfyUI would misread.

The converter never builds a model: it reads ``config.json`` and the safetensors weights of ``transformer/`` and
``vae/`` and writes each file atomically, refusing to replace an existing file unless asked.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic_io import atomic_output_path
from .errors import InvalidSettingError, ModelLoadError

logger = logging.getLogger(__name__)

# What ComfyUI's Wan 2.1 detection fixes or derives (comfy/model_detection.py, Wan 2.1 branch).
COMFY_WAN_HEAD_DIM = 128
COMFY_WAN_PATCH_SIZE = (1, 2, 2)
# Fields ComfyUI sets itself; a DiT whose value differs gets it in the ``config`` metadata entry.
_COMFY_WAN_FIXED = {"eps": 1e-6, "cross_attn_norm": True}

# What ComfyUI's Wan 2.1 VAE loader fixes (comfy/sd.py, Wan 2.1 VAE branch), as diffusers config fields.
COMFY_WAN_VAE_FIXED: dict[str, Any] = {
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "is_residual": False,
    "patch_size": None,
}
# Wan 2.1's latent statistics: ComfyUI's latent_formats.Wan21 uses exactly these (as does diffusers' default).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)

COMFY_FOLDERS = {"transformer": "diffusion_models", "vae": "vae"}
_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


# ----- DiT -----
def check_transformer_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ModelLoadError` if ComfyUI's Wan 2.1 loader could not load this ``WanTransformer3DModel`` right.

    Args:
        config: the diffusers transformer config (``transformer/config.json``).
    """
    head_dim = int(config.get("attention_head_dim", 128))
    if head_dim != COMFY_WAN_HEAD_DIM:
        raise ModelLoadError(
            f"This Wan DiT has attention heads of {head_dim}; ComfyUI's Wan loader assumes heads of "
            f"{COMFY_WAN_HEAD_DIM} (num_heads = dim // {COMFY_WAN_HEAD_DIM}), so it would split the attention wrongly. "
            f"Only DiTs with attention_head_dim {COMFY_WAN_HEAD_DIM} can be converted."
        )
    patch = tuple(int(p) for p in config.get("patch_size", COMFY_WAN_PATCH_SIZE))
    if patch != COMFY_WAN_PATCH_SIZE:
        raise ModelLoadError(
            f"This Wan DiT has patch_size {list(patch)}; ComfyUI's Wan 2.1 loader fixes it at "
            f"{list(COMFY_WAN_PATCH_SIZE)} (its output head is sized for that). It cannot be converted."
        )
    extras = {key: config.get(key) for key in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len") if config.get(key)}
    if extras:
        raise ModelLoadError(
            f"This Wan DiT has image conditioning ({extras}); only text-to-video Wan DiTs can be converted so far."
        )


def comfy_transformer_metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``"transformer"`` part of the ``config`` metadata entry: what ComfyUI would otherwise get wrong.

    ``text_dim`` and ``freq_dim`` are always written (ComfyUI never reads ``text_dim`` from the weights and fixes
    ``freq_dim``); ``eps`` and ``cross_attn_norm`` only when they differ from what ComfyUI fixes. ``qk_norm`` is
    never written: diffusers always normalises q and k, as ComfyUI does by default.
    """
    fields: dict[str, Any] = {
        "text_dim": int(config.get("text_dim", 4096)),
        "freq_dim": int(config.get("freq_dim", 256)),
    }
    actual = {"eps": float(config.get("eps", 1e-6)), "cross_attn_norm": bool(config.get("cross_attn_norm", True))}
    fields.update({key: value for key, value in actual.items() if value != _COMFY_WAN_FIXED[key]})
    return fields


# diffusers -> original names; each rule's pattern is matched at the start of the key's rest.
_TOP_LEVEL_RENAMES = (
    ("scale_shift_table", "head.modulation"),
    ("proj_out.", "head.head."),
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),  # after the SiLU at index 0
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("patch_embedding.", "patch_embedding."),
)
_BLOCK_RENAMES = (
    ("scale_shift_table", "modulation"),
    ("attn1.", "self_attn."),
    ("attn2.", "cross_attn."),
    ("norm2.", "norm3."),  # diffusers' norm2 is the cross-attention norm, the original's norm3
    ("ffn.net.0.proj.", "ffn.0."),
    ("ffn.net.2.", "ffn.2."),
)
_ATTENTION_RENAMES = (("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "o."),
                      ("norm_q.", "norm_q."), ("norm_k.", "norm_k."))
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.*)$")


def _rename(rest: str, rules: tuple[tuple[str, str], ...]) -> tuple[str, str] | None:
    """``(new prefix, remainder)`` for the first rule whose diffusers prefix starts ``rest``, else ``None``."""
    for old, new in rules:
        if rest.startswith(old):
            return new, rest[len(old):]
    return None


def _transformer_key(key: str) -> str | None:
    """The original Wan name of a diffusers ``WanTransformer3DModel`` key, or ``None`` if it has none."""
    block = _BLOCK_KEY.match(key)
    if block is None:
        renamed = _rename(key, _TOP_LEVEL_RENAMES)
        return None if renamed is None else renamed[0] + renamed[1]
    index, rest = block.groups()
    renamed = _rename(rest, _BLOCK_RENAMES)
    if renamed is None:
        return None
    prefix, rest = renamed
    if prefix in ("self_attn.", "cross_attn."):
        inner = _rename(rest, _ATTENTION_RENAMES)
        if inner is None:
            return None
        prefix, rest = prefix + inner[0], inner[1]
    return f"blocks.{index}.{prefix}{rest}"


def transformer_to_comfy(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map a diffusers ``WanTransformer3DModel`` state dict to ComfyUI's Wan names and its safetensors metadata.

    Args:
        state_dict: diffusers key -> tensor (any dtype; kept as is).
        config: the diffusers transformer config, checked with :func:`check_transformer_config`.

    Returns:
        ``(original key -> tensor, {"config": json})`` ready for ``safetensors.torch.save_file``.
    """
    check_transformer_config(config)
    converted = _convert(state_dict, _transformer_key, "Wan DiT")
    metadata = {"config": json.dumps({"transformer": comfy_transformer_metadata(config)}, sort_keys=True)}
    return converted, metadata


# ----- VAE -----
def check_vae_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ModelLoadError` if ComfyUI's Wan 2.1 VAE loader would build this ``AutoencoderKLWan`` otherwise.

    Args:
        config: the diffusers VAE config (``vae/config.json``).
    """
    differing = {}
    for key, fixed in COMFY_WAN_VAE_FIXED.items():
        value = config.get(key, fixed)  # diffusers' defaults are Wan 2.1's, so a missing field is the fixed one
        if (list(value) if isinstance(value, (list, tuple)) else value) != fixed:
            differing[key] = value
    decoder_dim = config.get("decoder_base_dim")
    if decoder_dim is not None and decoder_dim != config.get("base_dim", 96):
        differing["decoder_base_dim"] = decoder_dim  # ComfyUI builds both halves at the decoder's width
    for key, fixed in (("latents_mean", WAN21_LATENTS_MEAN), ("latents_std", WAN21_LATENTS_STD)):
        value = config.get(key)
        if value is not None and not _close(value, fixed):
            differing[key] = "not Wan 2.1's"
    if differing:
        wanted = ", ".join(f"{key} {value}" for key, value in COMFY_WAN_VAE_FIXED.items() if key in differing)
        raise ModelLoadError(
            f"This Wan VAE differs from what ComfyUI's Wan 2.1 VAE loader fixes: {differing}. ComfyUI would build "
            f"another network (it fixes {wanted or 'these'}; the decoder width equal to the encoder's; latents "
            "normalised with Wan 2.1's means and stds), so it cannot be converted."
        )


def _close(values: Any, expected: tuple[float, ...]) -> bool:
    return len(values) == len(expected) and all(math.isclose(float(a), b, abs_tol=1e-6) for a, b in zip(values, expected))


_RESNET_RENAMES = (("norm1.", "residual.0."), ("conv1.", "residual.2."), ("norm2.", "residual.3."),
                   ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut."))
_VAE_TOP = (("quant_conv.", "conv1."), ("post_quant_conv.", "conv2."))
_HALF_RENAMES = (("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2."),
                 ("mid_block.attentions.0.", "middle.1."))
_MID_RESNET = re.compile(r"^mid_block\.resnets\.(\d+)\.(.*)$")
_DOWN_BLOCK = re.compile(r"^down_blocks\.(\d+)\.(.*)$")
_UP_RESNET = re.compile(r"^up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$")
_UP_SAMPLER = re.compile(r"^up_blocks\.(\d+)\.upsamplers\.0\.(.*)$")


def _resnet_part(rest: str) -> str | None:
    """The original name of a residual block's parameter (``Sequential`` indexes), or ``None`` if not one."""
    renamed = _rename(rest, _RESNET_RENAMES)
    return None if renamed is None else renamed[0] + renamed[1]


def _vae_key(key: str, num_res_blocks: int) -> str | None:
    """The original Wan name of a diffusers ``AutoencoderKLWan`` key, or ``None`` if it has none."""
    top = _rename(key, _VAE_TOP)
    if top is not None:
        return top[0] + top[1]
    half, _, rest = key.partition(".")
    if half not in ("encoder", "decoder"):
        return None
    renamed = _rename(rest, _HALF_RENAMES)
    if renamed is not None:
        return f"{half}.{renamed[0]}{renamed[1]}"
    mid = _MID_RESNET.match(rest)
    if mid is not None:  # the original middle is (resnet, attention, resnet)
        part = _resnet_part(mid.group(2))
        return None if part is None else f"{half}.middle.{2 * int(mid.group(1))}.{part}"
    down = _DOWN_BLOCK.match(rest) if half == "encoder" else None
    if down is not None:  # one flat list in both layouts: residual blocks, then a resample, per level
        index, inner = down.groups()
        if inner.startswith(("resample.", "time_conv.")):
            return f"encoder.downsamples.{index}.{inner}"
        part = _resnet_part(inner)
        return None if part is None else f"encoder.downsamples.{index}.{part}"
    if half != "decoder":
        return None
    # Each up level is num_res_blocks + 1 residual blocks then one upsampler, flattened in the original.
    per_level = num_res_blocks + 2
    up = _UP_RESNET.match(rest)
    if up is not None:
        level, resnet, inner = up.groups()
        part = _resnet_part(inner)
        return None if part is None else f"decoder.upsamples.{int(level) * per_level + int(resnet)}.{part}"
    sampler = _UP_SAMPLER.match(rest)
    if sampler is not None:
        level, inner = sampler.groups()
        return f"decoder.upsamples.{int(level) * per_level + num_res_blocks + 1}.{inner}"
    return None


def vae_to_comfy(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Map a diffusers ``AutoencoderKLWan`` state dict to the original Wan 2.1 VAE names ComfyUI loads.

    Args:
        state_dict: diffusers key -> tensor (kept as is).
        config: the diffusers VAE config, checked with :func:`check_vae_config`.
    """
    check_vae_config(config)
    num_res_blocks = int(config.get("num_res_blocks", 2))
    return _convert(state_dict, lambda key: _vae_key(key, num_res_blocks), "Wan VAE")


def _convert(state_dict: Mapping[str, torch.Tensor], rename: Callable[[str], str | None], what: str) -> dict[str, torch.Tensor]:
    """Rename every key; an unknown key or two keys landing on one name is an error, never a silent drop."""
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        new_key = rename(key)
        if new_key is None:
            unknown.append(key)
            continue
        if new_key in converted:
            raise ModelLoadError(f"Two {what} weights map to {new_key}; this is not a Wan 2.1 layout the converter knows.")
        converted[new_key] = tensor.contiguous()
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ModelLoadError(f"The {what} has weights ComfyUI's Wan 2.1 layout has no place for: {shown}.")
    return converted


# ----- folders and files -----
@dataclass(frozen=True)
class ComfyExport:
    """Where :func:`export_comfy` wrote the two files (``out_dir/diffusion_models/NAME`` and ``out_dir/vae/NAME``)."""

    transformer: Path
    vae: Path


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing; the model folder is incomplete.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object.")
    return data


def _read_weights(component: Path) -> dict[str, torch.Tensor]:
    """All tensors of a diffusers component folder: one safetensors file, or the shards its index lists."""
    single = component / _WEIGHTS_NAME
    index = component / f"{_WEIGHTS_NAME}.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        shards = _read_config(index).get("weight_map", {})
        files = [component / name for name in sorted(set(shards.values()))]
    else:
        raise ModelLoadError(f"{component} has no {_WEIGHTS_NAME}; only safetensors weights can be converted.")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                tensors.update({key: handle.get_tensor(key) for key in handle.keys()})  # noqa: SIM118 (not a dict)
        except (OSError, SafetensorError) as exc:
            raise ModelLoadError(f"Cannot read {file}: {exc}") from None
    return tensors


def read_component(model_dir: str | Path, component: str, class_name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state dict, config)`` of ``model_dir/component``, refusing a component of another class."""
    folder = Path(model_dir) / component
    if not folder.is_dir():
        raise ModelLoadError(
            f"{Path(model_dir).name} has no {component}/ folder: it is not a diffusers Wan folder "
            f"(transformer/ with a WanTransformer3DModel, vae/ with an AutoencoderKLWan)."
        )
    config = _read_config(folder / "config.json")
    found = config.get("_class_name")
    if found != class_name:
        raise ModelLoadError(f"{folder} holds a {found}, not a {class_name}; only Wan 2.1 folders can be converted.")
    return _read_weights(folder), config


def comfy_paths(out_dir: str | Path, name: str) -> ComfyExport:
    """The two files an export named ``name`` writes under a ComfyUI ``models`` folder."""
    file_name = name if name.endswith(".safetensors") else f"{name}.safetensors"
    if Path(file_name).name != file_name or file_name.startswith("."):
        raise InvalidSettingError(f"The export name {name!r} must be a plain file name (no folders).")
    out_dir = Path(out_dir)
    return ComfyExport(out_dir / COMFY_FOLDERS["transformer"] / file_name, out_dir / COMFY_FOLDERS["vae"] / file_name)


def export_comfy(model_dir: str | Path, out_dir: str | Path, name: str | None = None, overwrite: bool = False) -> ComfyExport:
    """Write a diffusers Wan folder's DiT and VAE as ComfyUI single files under ``out_dir`` (a ComfyUI ``models`` folder).

    Both files are converted and checked before either is written; each is written atomically. An existing file
    is replaced only with ``overwrite``.

    Args:
        model_dir: the diffusers folder (``transformer/`` and ``vae/`` with config.json and safetensors weights).
        out_dir: where ``diffusion_models/`` and ``vae/`` go.
        name: file name of both files (default: the model folder's name).
        overwrite: replace existing files.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"Model folder not found: {model_dir}")
    paths = comfy_paths(out_dir, name or model_dir.resolve().name)
    if not overwrite:
        existing = [str(path) for path in (paths.transformer, paths.vae) if path.exists() or path.is_symlink()]
        if existing:
            raise InvalidSettingError(f"{' and '.join(existing)} already exist(s); choose another name or allow overwriting.")
    dit_weights, dit_config = read_component(model_dir, "transformer", "WanTransformer3DModel")
    vae_weights, vae_config = read_component(model_dir, "vae", "AutoencoderKLWan")
    dit, metadata = transformer_to_comfy(dit_weights, dit_config)
    vae = vae_to_comfy(vae_weights, vae_config)
    for path, tensors, meta in ((paths.transformer, dit, metadata), (paths.vae, vae, None)):
        with atomic_output_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        logger.info("Wrote %s (%d tensors)", path, len(tensors))
    return paths
