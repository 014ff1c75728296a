"""Load a text-to-video model from a local diffusers folder, detect its family, and cache it.

Supported family: ``unet3d`` (``UNet3DConditionModel``: ZeroScope v2, ModelScope T2V, VideoCrafter2 in
diffusers format, and the bundled toy-world demo model). Only local folders are read: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .attention import AttentionKernel, resolve_kernel
from .errors import InvalidSettingError, ModelLoadError
from .recommended_settings import RecommendedSettings, read_recommended_settings

logger = logging.getLogger(__name__)

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")
SUPPORTED_UNETS = {"UNet3DConditionModel": "unet3d"}
KNOWN_UNSUPPORTED = {
    "UNetMotionModel": "AnimateDiff",
    "UNetSpatioTemporalConditionModel": "Stable Video Diffusion",
    "I2VGenXLUNet": "I2VGen-XL",
    "LatteTransformer3DModel": "Latte",
    "CogVideoXTransformer3DModel": "CogVideoX",
    "WanTransformer3DModel": "Wan",
    "HunyuanVideoTransformer3DModel": "HunyuanVideo",
    "LTXVideoTransformer3DModel": "LTX-Video",
    "UNet2DConditionModel": "an image model (Stable Diffusion)",
}
_ARCHITECTURE_IGNORED_KEYS = {"_name_or_path", "_diffusers_version", "_class_name", "sample_size"}


@dataclass
class VideoModel:
    """A loaded text-to-video model, ready for training and sampling.

    Attributes:
        name: folder name, shown to users and stored in embedding files.
        family: ``"unet3d"``.
        identity: ``{"name": ..., "architecture": <hash of the UNet config>}``.
        kernel: attention kernel used by the pack's temporal attention processors.
        dtype: dtype of the UNet and text encoder; the VAE always runs in fp32.
        recommended: the folder's recommended settings (``motion_inversion.json``; none: the pack's defaults).
    """

    name: str
    path: Path
    family: str
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    device: torch.device
    dtype: torch.dtype
    kernel: AttentionKernel
    identity: dict[str, str] = field(default_factory=dict)
    recommended: RecommendedSettings = field(default_factory=RecommendedSettings)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def size_multiple(self) -> int:
        """Pixel sizes must be multiples of this (VAE factor times the UNet's downsampling)."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        """Latent (height, width) for a pixel size."""
        return height // self.vae_scale_factor, width // self.vae_scale_factor


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object.")
    return data


def detect_family(folder: str | Path) -> str:
    """Return the pack's family name for a diffusers folder, or raise :class:`ModelLoadError` saying what was found."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"Model folder not found: {folder}")
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"{folder.name} is not a diffusers model folder (no model_index.json). Put the whole diffusers folder "
            "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) in models/diffusers."
        )
    index = _read_json(folder / "model_index.json")
    denoiser = next((key for key in ("unet", "transformer") if key in index), None)
    if denoiser is None:
        raise ModelLoadError(f"{folder.name} has no unet or transformer listed in model_index.json ({index.get('_class_name')}).")
    config_path = folder / denoiser / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{folder.name}/{denoiser}/config.json is missing; the model folder is incomplete.")
    class_name = str(_read_json(config_path).get("_class_name", index[denoiser][-1] if isinstance(index[denoiser], list) else "?"))
    if class_name in SUPPORTED_UNETS:
        missing = [part for part in ("vae", "text_encoder", "tokenizer", "scheduler") if not (folder / part).is_dir()]
        if missing:
            raise ModelLoadError(f"{folder.name} is missing {', '.join(missing)}; the model folder is incomplete.")
        return SUPPORTED_UNETS[class_name]
    known = KNOWN_UNSUPPORTED.get(class_name)
    what = f"{class_name} ({known})" if known else class_name
    raise ModelLoadError(
        f"{folder.name} is a {index.get('_class_name', '?')} with a {what}, which Motion Inversion does not support yet. "
        "Supported: UNet3DConditionModel text-to-video models (ZeroScope, ModelScope T2V, VideoCrafter2) in diffusers format."
    )


def architecture_hash(unet_config: dict[str, Any]) -> str:
    """Short hash of the UNet's architecture, ``"v2:<16 hex digits>"`` (config without names, versions, sample size).

    Keys starting with ``_`` are diffusers' bookkeeping, not architecture: among them ``_use_default_values``,
    the keys a config file lacked, listed in an order that changes from process to process (ZeroScope's file
    lacks two). Older files hold hashes without the ``v2:`` scheme that included it; those cannot be compared.
    Keys set to ``None`` (unused options) are left out too, so a diffusers release that adds an option with a
    ``None`` default does not change the hash of every model.
    """
    relevant = {
        k: v for k, v in dict(unet_config).items() if k not in _ARCHITECTURE_IGNORED_KEYS and not k.startswith("_") and v is not None
    }
    return "v2:" + hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype for ``precision``; ``auto`` is fp32 off CUDA (half precision is slow on CPU), and on CUDA bf16
    where the GPU computes it natively (its range needs no loss scaling), else fp16."""
    if precision not in PRECISION_CHOICES:
        raise InvalidSettingError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}.")
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _load_components(folder: Path, dtype: torch.dtype) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        return {
            "unet": UNet3DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, local_files_only=True, low_cpu_mem_usage=False),
            "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32, local_files_only=True, low_cpu_mem_usage=False),
            "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=dtype, local_files_only=True, low_cpu_mem_usage=False),
            "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True, low_cpu_mem_usage=False),
            "scheduler": DDIMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True, low_cpu_mem_usage=False),
        }
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"Could not load {folder.name}: {str(exc)[:500]}") from None


_cache_lock = threading.Lock()
_cache: dict[tuple[Any, ...], VideoModel] = {}


def _cache_key(folder: Path, precision: str, attention: str, device: torch.device) -> tuple[Any, ...]:
    stamps = tuple(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted((folder / "unet").glob("*")) if p.is_file()
    )
    return (str(folder.resolve()), precision, attention, str(device), stamps)


def load_video_model(
    folder: str | Path,
    precision: str = "auto",
    attention: str = "auto",
    device: torch.device | str | None = None,
    use_cache: bool = True,
) -> VideoModel:
    """Load the model in ``folder`` (a local diffusers text-to-video folder), reusing the cached one if unchanged.

    Only the most recently loaded model is cached, so switching models frees the previous one.
    """
    folder = Path(folder)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    family = detect_family(folder)
    dtype = resolve_dtype(precision, device)
    kernel = resolve_kernel(attention, device)
    key = _cache_key(folder, precision, attention, device)
    with _cache_lock:
        if use_cache and key in _cache:
            logger.info("Reusing loaded model %s", folder.name)
            return _cache[key]
        _cache.clear()
    logger.info("Loading %s (%s, %s, %s attention) on %s", folder.name, family, dtype, kernel, device)
    parts = _load_components(folder, dtype)
    for module_name in ("unet", "vae", "text_encoder"):
        parts[module_name].to(device).eval().requires_grad_(False)
    model = VideoModel(
        name=folder.name,
        path=folder,
        family=family,
        device=device,
        dtype=dtype,
        kernel=kernel,
        identity={"name": folder.name, "architecture": architecture_hash(parts["unet"].config)},
        recommended=read_recommended_settings(folder),
        **parts,
    )
    if use_cache:
        with _cache_lock:
            _cache[key] = model
    return model


def clear_model_cache() -> None:
    """Forget the cached model (frees its memory once nothing else holds it)."""
    with _cache_lock:
        _cache.clear()
