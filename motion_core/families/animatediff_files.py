"""AnimateDiff from the files ComfyUI users have: an SD1.5 checkpoint plus a motion module, as a ``UNetMotionModel``.

The checkpoint (``models/checkpoints``: UNet, VAE and CLIP text encoder in SD1.5's own key layout) and the motion
module (``models/animatediff_models``: ``mm_sd_v15_v2``, ``v3_sd15_mm`` and the like) are converted with diffusers'
single-file converters, with the part configs shipped in ``motion_core/configs/sd15`` (nothing is downloaded). The
motion adapter's shape is read from the motion module itself: motion modules per block, whether it has a mid block,
the length of its position table (24 on v1, 32 on v2/v3). The tokenizer is CLIP's, from a folder the caller names
(inside ComfyUI: its own ``comfy/sd1_tokenizer``). Safetensors files are read as such; ``.ckpt`` / ``.pt`` / ``.pth``
files with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError

logger = logging.getLogger(__name__)

SD15_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "sd15"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_MODULE_KEY = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.motion_modules\.(\d+)\.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or weights-only torch file (a Lightning ``state_dict`` entry unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"File not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.suffix in PICKLE_SUFFIXES:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
            if not isinstance(state, dict):
                raise ModelLoadError(f"{path.name} holds a {type(state).__name__}, not a dictionary of tensors.")
            return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    except ModelLoadError:
        raise
    except Exception as exc:  # safetensors / unpickler errors come in many types; say which file and why
        raise ModelLoadError(f"Could not read {path.name}: {str(exc)[:300]}") from None
    raise ModelLoadError(f"{path.name}: expected a .safetensors, .ckpt, .pt or .pth file.")


def _config(config_dir: Path, part: str, file: str = "config.json") -> dict[str, Any]:
    with open(config_dir / part / file, encoding="utf-8") as handle:
        return {k: v for k, v in json.load(handle).items() if not k.startswith("_")}


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, file: Path) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"{file.name} does not hold an SD1.5-style {what} ({len(missing)} weights missing, e.g. "
            f"{(missing or ['-'])[0]}; {len(unexpected)} unexpected, e.g. {(unexpected or ['-'])[0]}). "
            "Use an SD1.5 checkpoint and an SD1.5 motion module (mm_sd_v15_v2, v3_sd15_mm, ...)."
        )


def adapter_config(module_state: dict[str, torch.Tensor], defaults: dict[str, Any]) -> dict[str, Any]:
    """The ``MotionAdapter`` config of an original-layout motion module: ``defaults`` (heads, norm groups, widths)
    with the block layout and the position table's length read from the file."""
    per_block: dict[tuple[str, int], set[int]] = {}
    for key in module_state:
        if match := _MODULE_KEY.match(key):
            per_block.setdefault((match[1], int(match[2])), set()).add(int(match[3]))
    down = [len(per_block.get(("down_blocks", i), ())) for i in range(len(defaults["block_out_channels"]))]
    if not per_block or len(set(down)) != 1 or down[0] == 0:
        raise ModelLoadError("This file is not an AnimateDiff motion module (no down_blocks.i.motion_modules.j weights).")
    tables = [t for k, t in module_state.items() if k.endswith("pos_encoder.pe")]
    config = {**defaults, "motion_layers_per_block": down[0], "use_motion_mid_block": any(k.startswith("mid_block.") for k in module_state)}
    if tables:
        config["motion_max_seq_length"] = int(tables[0].shape[1])
    return config


def load_animatediff_files(checkpoint: Path, motion_module: Path, tokenizer_dir: Path, dtype: torch.dtype,
                           config_dir: Path = SD15_CONFIGS) -> dict[str, Any]:
    """``denoiser`` (``UNetMotionModel``), ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` from an SD1.5
    checkpoint and a motion module; ``config_dir`` holds the part configs (default: SD1.5's, shipped)."""
    from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from diffusers.loaders.single_file_utils import (
        convert_animatediff_checkpoint_to_diffusers,
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    checkpoint, motion_module = Path(checkpoint), Path(motion_module)
    state = read_state_dict(checkpoint)
    if not any(key.startswith("model.diffusion_model.") for key in state):
        raise ModelLoadError(f"{checkpoint.name} has no model.diffusion_model.* weights: it is not a Stable Diffusion checkpoint.")
    unet_config, vae_config = _config(config_dir, "unet"), _config(config_dir, "vae")
    unet = UNet2DConditionModel(**unet_config)
    _load_strict(unet, convert_ldm_unet_checkpoint(state, unet_config), "UNet", checkpoint)
    vae = AutoencoderKL(**vae_config)
    _load_strict(vae, convert_ldm_vae_checkpoint(state, vae_config), "VAE", checkpoint)
    text_encoder = CLIPTextModel(CLIPTextConfig(**_config(config_dir, "text_encoder")))
    clip_state = {k: v for k, v in convert_ldm_clip_checkpoint(state).items() if not k.endswith("position_ids")}
    _load_strict(text_encoder, clip_state, "CLIP text encoder", checkpoint)
    del state
    module_state = read_state_dict(motion_module)
    adapter = MotionAdapter(**adapter_config(module_state, _config(config_dir, "motion_adapter")))
    _load_strict(adapter, convert_animatediff_checkpoint_to_diffusers(module_state), "motion module", motion_module)
    denoiser = UNetMotionModel.from_unet2d(unet, adapter).to(dtype)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"No CLIP tokenizer in {tokenizer_dir}: {str(exc)[:200]}") from None
    # ComfyUI's copy says 8192 (it splits long prompts itself); CLIP's position table is the limit here
    tokenizer.model_max_length = int(text_encoder.config.max_position_embeddings)
    scheduler = DDIMScheduler.from_config(_config(config_dir, "scheduler", "scheduler_config.json"))
    logger.info("AnimateDiff from %s + %s (%d motion modules per block, mid block %s, %d frames)", checkpoint.name,
                motion_module.name, adapter.config.motion_layers_per_block, adapter.config.use_motion_mid_block,
                adapter.config.motion_max_seq_length)
    return {"denoiser": denoiser.eval(), "vae": vae.eval(), "text_encoder": text_encoder.to(dtype).eval(),
            "tokenizer": tokenizer, "scheduler": scheduler}
