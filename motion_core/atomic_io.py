"""Atomic file writes: a crash or Cancel during a save never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask() -> int:
    """The process umask (read once at import: toggling it later would race with other threads' file creation)."""
    current = os.umask(0)
    os.umask(current)
    return current


_PROCESS_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_output_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; on success it is renamed onto ``final_path``.

    The temporary file lives in the same folder (same file system), so ``os.replace`` is atomic. On any
    exception, including ``KeyboardInterrupt`` and ComfyUI's interrupt, the temporary file is removed and
    whatever was at ``final_path`` before stays untouched.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=".partial", dir=final_path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        # mkstemp makes 0600 files, and some writers recreate the file: set the usual mode on what was written.
        os.chmod(tmp_path, 0o666 & ~_PROCESS_UMASK)
        os.replace(tmp_path, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
