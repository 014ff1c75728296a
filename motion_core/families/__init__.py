"""Model families: one module per kind of video denoiser, behind the interface of :class:`.base.ModelFamily`.

:func:`detect_family` reads a diffusers folder's ``model_index.json`` and denoiser config and returns the family
that serves it; :func:`family_named` finds one by the name stored in embedding files. The choice lists the CLI
and the nodes offer (layer sets, samplers) are the union over all families; each family refuses the names it
does not serve with a clear error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .base import FAMILY_DEFAULT, ModelFamily
from .animatediff import AnimateDiffFamily
from .latte import LatteFamily
from .unet3d import UNet3DFamily
from .wan import WanFamily

FAMILIES: tuple[ModelFamily, ...] = (UNet3DFamily(), WanFamily(), AnimateDiffFamily(), LatteFamily())
KNOWN_UNSUPPORTED = {
    "UNetSpatioTemporalConditionModel": "Stable Video Diffusion",
    "I2VGenXLUNet": "I2VGen-XL",
    "CogVideoXTransformer3DModel": "CogVideoX",
    "HunyuanVideoTransformer3DModel": "HunyuanVideo",
    "LTXVideoTransformer3DModel": "LTX-Video",
    "UNet2DConditionModel": "an image model (Stable Diffusion)",
}


def _union(names: list[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in names for name in group))


ALL_LAYER_SETS: tuple[str, ...] = _union([f.layer_sets for f in FAMILIES])
ALL_SCHEDULERS: tuple[str, ...] = _union([f.schedulers for f in FAMILIES])
# What a layer-set or scheduler option offers: the family default first, then every family's own names.
LAYER_CHOICES: tuple[str, ...] = (FAMILY_DEFAULT, *ALL_LAYER_SETS)
SCHEDULER_CHOICES: tuple[str, ...] = (FAMILY_DEFAULT, *ALL_SCHEDULERS)


def family_named(name: str) -> ModelFamily | None:
    """The family stored as ``name`` in embedding files, or ``None``."""
    return next((f for f in FAMILIES if f.name == name), None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object.")
    return data


def read_model_index(folder: str | Path) -> dict[str, Any]:
    """The folder's ``model_index.json``, or :class:`ModelLoadError` saying what the folder lacks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"Model folder not found: {folder}")
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"{folder.name} is not a diffusers model folder (no model_index.json). Put the whole diffusers folder "
            "(model_index.json, unet/ or transformer/, vae/, text_encoder/, tokenizer/, scheduler/) in models/diffusers."
        )
    return _read_json(folder / "model_index.json")


def detect_family(folder: str | Path) -> ModelFamily:
    """The family serving the diffusers folder ``folder``, or :class:`ModelLoadError` saying what was found."""
    folder = Path(folder)
    index = read_model_index(folder)
    denoiser = next((key for key in ("unet", "transformer") if key in index), None)
    if denoiser is None:
        raise ModelLoadError(f"{folder.name} has no unet or transformer listed in model_index.json ({index.get('_class_name')}).")
    config_path = folder / denoiser / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{folder.name}/{denoiser}/config.json is missing; the model folder is incomplete.")
    listed = index[denoiser][-1] if isinstance(index[denoiser], list) else "?"
    class_name = str(_read_json(config_path).get("_class_name", listed))
    for family in FAMILIES:
        if class_name in family.denoiser_classes and denoiser == family.denoiser_folder:
            missing = [part for part in family.required_parts() if not (folder / part).is_dir()]
            if missing:
                raise ModelLoadError(f"{folder.name} is missing {', '.join(missing)}; the model folder is incomplete.")
            return family
    known = KNOWN_UNSUPPORTED.get(class_name)
    what = f"{class_name} ({known})" if known else class_name
    supported = "; ".join(f"{', '.join(f.denoiser_classes)} ({f.name})" for f in FAMILIES)
    raise ModelLoadError(
        f"{folder.name} is a {index.get('_class_name', '?')} with a {what}, which Motion Inversion does not support yet. "
        f"Supported denoisers, in diffusers format: {supported}."
    )


__all__ = ["ALL_LAYER_SETS", "ALL_SCHEDULERS", "FAMILIES", "FAMILY_DEFAULT", "LAYER_CHOICES", "SCHEDULER_CHOICES", "ModelFamily", "detect_family", "family_named", "read_model_index"]
