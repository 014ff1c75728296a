"""``auto`` widget values: a size, frame-count, steps, learning-rate, cfg or layers widget left at its auto value
means the model's recommended value (its folder's ``motion_inversion.json``, else the pack's default).

The auto value is 0 where 0 meant nothing before. Two widgets had a meaning for 0 in saved workflows and keep it,
so their auto value is -1: the training frame count (0: every frame given) and cfg (0: no text guidance).
"""

from __future__ import annotations

from typing import Any

from ..motion_core.families import FAMILY_DEFAULT
from ..motion_core.recommended_settings import SETTINGS_FILE, built_in_default

AUTO = 0
AUTO_FRAME_COUNT = -1
AUTO_CFG = -1.0
AUTO_LAYERS = FAMILY_DEFAULT


def given(value: Any, auto: Any) -> Any | None:
    """``None`` (use the recommended value) when ``value`` is the widget's auto value, else ``value``."""
    return None if value == auto else value


def recommended_phrase(section: str, key: str) -> str:
    """What an auto value of ``section.key`` means, for tooltips (the pack's default named)."""
    return f"the model's recommended value ({SETTINGS_FILE} in its folder; without one, the pack's default {built_in_default(section, key)})"


def auto_tooltip(text: str, section: str, key: str, auto: Any = AUTO) -> str:
    """``text`` followed by what the widget's auto value means."""
    return f"{text} {auto:g} = {recommended_phrase(section, key)}."
