"""Defaults read from their one source (the core's dataclasses and function signatures), for the CLI and the nodes."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any


def field_default(config: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``config`` (e.g. ``TrainingConfig.steps``)."""
    for item in dataclasses.fields(config):
        if item.name == name:
            if item.default is dataclasses.MISSING:
                raise TypeError(f"{config.__name__}.{name} has no default")
            return item.default
    raise TypeError(f"{config.__name__} has no field {name!r}")


def parameter_default(function: Callable[..., Any], name: str) -> Any:
    """The default of parameter ``name`` of ``function`` (for settings that have no dataclass)."""
    default = inspect.signature(function).parameters[name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{function.__name__}({name}) has no default")
    return default
