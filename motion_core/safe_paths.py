"""Turn a user's filename prefix into a path that can only ever be inside a given folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import InvalidSettingError

_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._\- ]+")
MAX_COMPONENT_LENGTH = 120


def sanitize_prefix(prefix: str, default: str = "motion_embedding") -> list[str]:
    """Split ``prefix`` into safe path components.

    Separators ``/`` and ``\\`` make subfolders; empty, ``.`` and ``..`` components and drive letters are
    dropped; characters other than letters, digits, ``. _ -`` and space become ``_``; leading dots are
    removed so no hidden files are made.
    """
    parts: list[str] = []
    for raw in re.split(r"[\\/]+", prefix or ""):
        cleaned = _UNSAFE_CHARACTERS.sub("_", raw.replace(":", "_")).strip(" .")
        if cleaned and cleaned not in (".", ".."):
            parts.append(cleaned[:MAX_COMPONENT_LENGTH])
    return parts or [default]


def unique_output_path(base_dir: str | Path, prefix: str, suffix: str) -> Path:
    """A new file path ``base_dir/<sub folders>/<name>_NNNNN<suffix>`` that does not exist yet.

    The result is always inside ``base_dir`` whatever ``prefix`` holds (``..``, absolute paths, odd
    characters); the counter continues after the highest one already there.
    """
    base = Path(base_dir).resolve()
    *folders, name = sanitize_prefix(prefix)
    folder = base.joinpath(*folders)
    resolved = folder.resolve()
    if os.path.commonpath([base, resolved]) != str(base):
        raise InvalidSettingError(f"Filename prefix {prefix!r} points outside {base}; use a plain name.")
    pattern = re.compile(re.escape(name) + r"_(\d{5})" + re.escape(suffix) + "$")
    highest = 0
    if folder.is_dir():
        for entry in folder.iterdir():
            match = pattern.match(entry.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return folder / f"{name}_{highest + 1:05d}{suffix}"
