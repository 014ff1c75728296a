"""A model's recommended settings: the optional ``motion_inversion.json`` beside its ``model_index.json``.

Format (version 1; every key optional)::

    {"format_version": 1,
     "train":  {"width": 32, "height": 32, "frames": 8, "steps": 200, "learning_rate": 0.1, "layers": "all"},
     "sample": {"width": 32, "height": 32, "frames": 8, "steps": 25, "cfg": 1.5}}

A key the file does not give (or a folder without the file) takes the pack's built-in default, the one source of
defaults: :class:`motion_core.training.TrainingConfig` and :class:`motion_core.sampling.SamplingConfig` (the paper's
ZeroScope settings; training size and frame count are the sampling ones, as the paper trains at the size it
generates). The command line uses these values for the options a user did not give, and the nodes for widgets
left at ``auto``. A value of the wrong type or out of range, or an unknown ``format_version``, is a
:class:`ModelLoadError` naming the file and the key; an unknown key only logs a warning, so files written for a
newer pack still load.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .temporal_layers import LAYER_SETS

logger = logging.getLogger(__name__)

SETTINGS_FILE = "motion_inversion.json"
FORMAT_VERSION = 1
SECTIONS = ("train", "sample")
# frame_resize.MAX_FRAME_SIDE, the largest side the pack resizes to (not imported: frame_resize imports
# memory_estimate, which imports model_loading, which imports this module)
MAX_SIDE = 8192
MAX_FRAMES = 1024  # as many as the nodes' frame-count widgets offer


@dataclass(frozen=True)
class _Limit:
    """What a key may hold: ``kind`` int (a whole number) or float (any finite number) within ``low..high``
    (``low`` excluded when ``low_open``), or (``kind`` str) a layer set name of the model's family."""

    kind: type
    low: float = 0
    high: float = math.inf
    low_open: bool = False

    def describe(self) -> str:
        """E.g. "a whole number from 1 to 8192" (numbers only: a string is checked against its choices)."""
        what = "a whole number" if self.kind is int else "a number"
        low = f"above {self.low:g}" if self.low_open else f"from {self.low:g}"
        return f"{what} {low} to {self.high:g}"


_LIMITS: dict[str, dict[str, _Limit]] = {
    "train": {
        "width": _Limit(int, 1, MAX_SIDE), "height": _Limit(int, 1, MAX_SIDE), "frames": _Limit(int, 1, MAX_FRAMES),
        "steps": _Limit(int, 1, 100_000), "learning_rate": _Limit(float, 0, 10, low_open=True), "layers": _Limit(str),
    },
    "sample": {
        "width": _Limit(int, 1, MAX_SIDE), "height": _Limit(int, 1, MAX_SIDE), "frames": _Limit(int, 1, MAX_FRAMES),
        "steps": _Limit(int, 1, 1000), "cfg": _Limit(float, 0, 50),
    },
}
# section.key -> (settings class name, field) of the pack's built-in default
_BUILT_IN = {
    "train": {"width": ("SamplingConfig", "width"), "height": ("SamplingConfig", "height"),
              "frames": ("SamplingConfig", "frames"), "steps": ("TrainingConfig", "steps"),
              "learning_rate": ("TrainingConfig", "learning_rate"), "layers": ("TrainingConfig", "layer_set")},
    "sample": {"width": ("SamplingConfig", "width"), "height": ("SamplingConfig", "height"),
               "frames": ("SamplingConfig", "frames"), "steps": ("SamplingConfig", "steps"),
               "cfg": ("SamplingConfig", "guidance_scale")},
}


@dataclass(frozen=True)
class TrainingRecommendation:
    """Recommended training settings; ``None``: not in the file (the pack's default applies)."""

    width: int | None = None
    height: int | None = None
    frames: int | None = None
    steps: int | None = None
    learning_rate: float | None = None
    layers: str | None = None


@dataclass(frozen=True)
class SamplingRecommendation:
    """Recommended sampling settings; ``None``: not in the file (the pack's default applies)."""

    width: int | None = None
    height: int | None = None
    frames: int | None = None
    steps: int | None = None
    cfg: float | None = None


@dataclass(frozen=True)
class RecommendedSettings:
    """A model's recommended settings as its ``motion_inversion.json`` gives them.

    Attributes:
        train, sample: the file's values (``None`` where it has none).
        source: the file they were read from; ``None`` when the model folder has none.
    """

    train: TrainingRecommendation = field(default_factory=TrainingRecommendation)
    sample: SamplingRecommendation = field(default_factory=SamplingRecommendation)
    source: Path | None = None

    def from_file(self, section: str, key: str) -> Any | None:
        """The file's value of ``section.key``, or ``None``."""
        return getattr(getattr(self, _check_section(section)), key)

    def value(self, section: str, key: str) -> Any:
        """The recommended value of ``section.key``: the file's, else the pack's built-in default."""
        given = self.from_file(section, key)
        return given if given is not None else built_in_default(section, key)


def _check_section(section: str) -> str:
    if section not in SECTIONS:
        raise ValueError(f"unknown settings section {section!r}; one of {SECTIONS}")
    return section


def built_in_default(section: str, key: str) -> Any:
    """The pack's own default for ``section.key`` (a field default of TrainingConfig or SamplingConfig)."""
    # Imported here: training and sampling import model_loading, which imports this module.
    from .defaults import field_default
    from .sampling import SamplingConfig
    from .training import TrainingConfig

    owner, name = _BUILT_IN[_check_section(section)][key]
    return field_default({"SamplingConfig": SamplingConfig, "TrainingConfig": TrainingConfig}[owner], name)


def _checked_value(path: Path, section: str, key: str, value: Any, layer_sets: Collection[str]) -> Any:
    """``value`` as the type of ``section.key``, or :class:`ModelLoadError` naming the file, the key and the range."""
    limit = _LIMITS[section][key]
    where = f"{path}: {section}.{key}"
    if limit.kind is str:
        if not isinstance(value, str) or value not in layer_sets:
            raise ModelLoadError(f"{where} must be one of {', '.join(layer_sets)}, got {value!r}. "
                                 "Fix it or delete the key (the pack's default then applies).")
        return value
    number_ok = isinstance(value, int) if limit.kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not number_ok or not math.isfinite(value):
        raise ModelLoadError(f"{where} must be {limit.describe()}, got {value!r}. Fix it or delete the key (the pack's default then applies).")
    too_low = value <= limit.low if limit.low_open else value < limit.low
    if too_low or value > limit.high:
        raise ModelLoadError(f"{where} must be {limit.describe()}, got {value!r}. Fix it or delete the key (the pack's default then applies).")
    return limit.kind(value)


def parse_recommended_settings(data: Any, path: Path, layer_sets: Collection[str] = LAYER_SETS) -> RecommendedSettings:
    """Check the parsed JSON of ``path`` and return its settings (see the module docstring for the format).

    Args:
        data: what ``json.loads`` returned for the file.
        path: the file, named in every message.
        layer_sets: the layer set names ``train.layers`` may hold (the model family's).

    Raises:
        ModelLoadError: not an object, an unknown ``format_version``, a section that is not an object, or a value of
            the wrong type or out of range.
    """
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object with 'train' and/or 'sample' settings, got {type(data).__name__}.")
    version = data.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ModelLoadError(f"{path}: format_version {version!r} is not one this pack reads ({FORMAT_VERSION}); "
                             "update the pack, or remove the file to use the pack's defaults.")
    for key in data:
        if key != "format_version" and key not in SECTIONS:
            logger.warning("%s: unknown key %r ignored (written for a newer version of the pack?)", path, key)
    sections: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        given = data.get(section, {})
        if not isinstance(given, dict):
            raise ModelLoadError(f"{path}: {section} must be a JSON object of settings, got {type(given).__name__}.")
        values = {}
        for key, value in given.items():
            if key not in _LIMITS[section]:
                logger.warning("%s: unknown key %r ignored (written for a newer version of the pack?)", path, f"{section}.{key}")
                continue
            values[key] = _checked_value(path, section, key, value, layer_sets)
        sections[section] = values
    return RecommendedSettings(TrainingRecommendation(**sections["train"]), SamplingRecommendation(**sections["sample"]), path)


def read_recommended_settings(folder: str | Path, layer_sets: Collection[str] = LAYER_SETS) -> RecommendedSettings:
    """The recommended settings of the model in ``folder`` (its ``motion_inversion.json``; none: the pack's defaults).

    Raises:
        ModelLoadError: the file exists but cannot be read, is not JSON, or holds a bad value (see
            :func:`parse_recommended_settings`).
    """
    path = Path(folder) / SETTINGS_FILE
    if not path.exists():
        return RecommendedSettings()
    if not path.is_file():
        raise ModelLoadError(f"{path} is not a regular file; remove it or put the model's settings in it.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}. Fix the file, or remove it to use the pack's defaults.") from None
    return parse_recommended_settings(data, path, layer_sets)


def resolve_recommended(
    settings: RecommendedSettings, section: str, given: Mapping[str, Any | None], model_name: str
) -> dict[str, Any]:
    """``given`` with every ``None`` replaced by the recommended value; logs (INFO) which values were filled in.

    Args:
        settings: the model's recommended settings.
        section: ``"train"`` or ``"sample"``.
        given: key -> the value a user set, or ``None`` for "the model's recommended value".
        model_name: shown in the log line.
    """
    resolved = dict(given)
    from_file, built_in = [], []
    for key, value in given.items():
        if value is not None:
            continue
        resolved[key] = settings.value(section, key)
        (from_file if settings.from_file(section, key) is not None else built_in).append(f"{key} {resolved[key]}")
    what = "training" if section == "train" else "sampling"
    if from_file:
        logger.info("%s: recommended %s settings from %s: %s", model_name, what, settings.source.name, ", ".join(from_file))
    if built_in:
        logger.info("%s: the pack's default %s settings (no value in %s): %s", model_name, what, SETTINGS_FILE, ", ".join(built_in))
    return resolved


def resolve_sampling_recommended(
    settings: RecommendedSettings, given: Mapping[str, Any | None], model_name: str, embedding_frames: int | None
) -> dict[str, Any]:
    """:func:`resolve_recommended` for sampling, where an unset frame count with an embedding applied is the
    embedding's training frame count (``embedding_frames``): the motion it learned spans that many frames, so
    generating as many keeps its timing; resampling to the model's recommended count would speed it up or slow it
    down. Without an embedding it is the model's recommended count."""
    if given.get("frames") is None and embedding_frames:
        logger.info("%s: sampling %d frames, the embedding's training frame count", model_name, embedding_frames)
        given = {**given, "frames": int(embedding_frames)}
    return resolve_recommended(settings, "sample", given, model_name)

