"""Load a text-to-video model from a local diffusers folder, detect its family, and cache it.

Families (:mod:`motion_core.families`): ``unet3d`` (``UNet3DConditionModel``: ZeroScope v2, ModelScope T2V,
VideoCrafter2 in diffusers format, and the bundled toy-world demo model) and ``wan`` (``WanPipeline`` folders:
Wan 2.1/2.2 text-to-video, the toy-world Wan). Only local folders are read: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .attention import AttentionKernel
from .errors import InvalidSettingError
from .families import KNOWN_UNSUPPORTED, ModelFamily, detect_family, read_model_index
from .recommended_settings import RecommendedSettings, read_recommended_settings

__all__ = [
    "KNOWN_UNSUPPORTED", "PRECISION_CHOICES", "VideoModel", "architecture_hash", "clear_model_cache", "detect_family",
    "load_animatediff_files_model", "load_video_model", "resolve_dtype",
]

logger = logging.getLogger(__name__)

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")
_ARCHITECTURE_IGNORED_KEYS = {"_name_or_path", "_diffusers_version", "_class_name", "sample_size"}


@dataclass
class VideoModel:
    """A loaded text-to-video model, ready for training and sampling.

    Attributes:
        name: folder name, shown to users and stored in embedding files.
        family: the model's family (:class:`ModelFamily`; ``str(family)`` is its name, e.g. ``"unet3d"``).
        denoiser: the UNet or transformer that predicts noise or velocity.
        identity: ``{"name": ..., "architecture": <hash of the denoiser config>}``.
        kernel: attention kernel used by the pack's temporal attention processors.
        dtype: dtype of the denoiser and text encoder; the VAE always runs in fp32.
        recommended: the folder's recommended settings (``motion_inversion.json``; none: the pack's defaults).
    """

    name: str
    path: Path
    family: ModelFamily
    denoiser: Any
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
    # The denoiser under its UNet3D-era name, kept for one release (nodes and scripts read ``model.unet``, and
    # ``dataclasses.replace(model, unet=...)`` still swaps the denoiser). Read through the property set below.
    unet: InitVar[Any] = None

    def __post_init__(self, unet: Any) -> None:
        if unet is not None:
            self.denoiser = unet

    @property
    def vae_scale_factor(self) -> int:
        return self.family.vae_scale_factor(self)

    @property
    def latent_channels(self) -> int:
        return self.family.latent_channels(self)

    @property
    def size_multiple(self) -> int:
        """Pixel sizes must be multiples of this (VAE factor times the denoiser's downsampling or patch size)."""
        return self.family.size_multiple(self)

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        """Latent (height, width) for a pixel size."""
        return height // self.vae_scale_factor, width // self.vae_scale_factor

    def modules(self) -> tuple[Any, ...]:
        """The modules holding weights: denoiser, VAE, text encoder."""
        return (self.denoiser, self.vae, self.text_encoder)


def _set_denoiser(model: VideoModel, denoiser: Any) -> None:
    model.denoiser = denoiser


VideoModel.unet = property(  # type: ignore[assignment]
    lambda self: self.denoiser, _set_denoiser, doc="The denoiser (older name, kept for one release)."
)


def architecture_hash(unet_config: dict[str, Any]) -> str:
    """Short hash of the denoiser's architecture, ``"v2:<16 hex digits>"`` (config without names, versions, sample size).

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


_cache_lock = threading.Lock()
_cache: dict[tuple[Any, ...], VideoModel] = {}


def _cache_key(folder: Path, family: ModelFamily, precision: str, attention: str, device: torch.device) -> tuple[Any, ...]:
    stamps = tuple(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted((folder / family.denoiser_folder).glob("*"))
        if p.is_file()
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
    kernel = family.resolve_kernel(attention, device)
    key = _cache_key(folder, family, precision, attention, device)
    with _cache_lock:
        if use_cache and key in _cache:
            logger.info("Reusing loaded model %s", folder.name)
            cached = _cache[key]
            # Cheap to read, and an edited motion_inversion.json should take effect without reloading the weights.
            cached.recommended = read_recommended_settings(folder, family.layer_sets)
            return cached
        _cache.clear()
    logger.info("Loading %s (%s, %s, %s attention) on %s", folder.name, family, dtype, kernel, device)
    parts = family.load_components(folder, read_model_index(folder), dtype)
    model = _assemble(folder.name, folder, family, parts, device, dtype, kernel, read_recommended_settings(folder, family.layer_sets))
    if use_cache:
        with _cache_lock:
            _cache[key] = model
    return model


def _assemble(name: str, path: Path, family: ModelFamily, parts: dict[str, Any], device: torch.device, dtype: torch.dtype,
              kernel: AttentionKernel, recommended: RecommendedSettings) -> VideoModel:
    """A :class:`VideoModel` of loaded ``parts``, frozen, in eval mode, on ``device``."""
    for module_name in ("denoiser", "vae", "text_encoder"):
        parts[module_name].to(device).eval().requires_grad_(False)
    return VideoModel(name=name, path=path, family=family, device=device, dtype=dtype, kernel=kernel,
                      identity={"name": name, "architecture": architecture_hash(parts["denoiser"].config)},
                      recommended=recommended, **parts)


def load_animatediff_files_model(
    checkpoint: str | Path,
    motion_module: str | Path,
    tokenizer_dir: str | Path,
    precision: str = "auto",
    attention: str = "auto",
    device: torch.device | str | None = None,
    config_dir: str | Path | None = None,
) -> VideoModel:
    """An AnimateDiff model from an SD1.5 checkpoint and a motion module (single files, as ComfyUI users keep them;
    see :mod:`motion_core.families.animatediff_files`), named ``"<checkpoint> + <motion module>"``. Not cached.
    ``config_dir``: the part configs (default: SD1.5's, shipped with the pack)."""
    from .families.animatediff import AnimateDiffFamily
    from .families.animatediff_files import SD15_CONFIGS, load_animatediff_files

    checkpoint, motion_module = Path(checkpoint), Path(motion_module)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    family = AnimateDiffFamily()
    dtype = resolve_dtype(precision, device)
    kernel = family.resolve_kernel(attention, device)
    name = f"{checkpoint.stem} + {motion_module.stem}"
    logger.info("Loading %s (%s, %s, %s attention) on %s", name, family, dtype, kernel, device)
    parts = load_animatediff_files(checkpoint, motion_module, Path(tokenizer_dir), dtype, Path(config_dir or SD15_CONFIGS))
    return _assemble(name, checkpoint, family, parts, device, dtype, kernel, RecommendedSettings())


def clear_model_cache() -> None:
    """Forget the cached model (frees its memory once nothing else holds it)."""
    with _cache_lock:
        _cache.clear()
