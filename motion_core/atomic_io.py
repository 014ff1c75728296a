"""Atomic file writes: a crash or Cancel during a save never leaves a half-written file under the final name.

A save writes a hidden temporary file beside the target, ``.<name>.<host>-<pid>.<random>.partial``, and renames it
onto the target when the writer has finished. A failed save removes it. A *killed* save (no ``except`` clause
runs) cannot, so every save first removes the partial files in its folder that no writer will ever finish:
those of a process of this host that no longer runs, and any older than :data:`STALE_PARTIAL_SECONDS` (a writer
on another host sharing the folder, a reused process id, or the random-only names of earlier versions).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
# A partial file this old is stale whoever wrote it: no save of the pack takes a day.
STALE_PARTIAL_SECONDS = 24 * 3600
# ``.<target name>.<host>-<pid>.<mkstemp random>.partial``; host names are reduced to [A-Za-z0-9-] (no dots).
_OWNED_PARTIAL = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.partial$")
# What earlier versions wrote: ``.<target name>.<mkstemp random>.partial`` (cleaned by age only).
_UNOWNED_PARTIAL = re.compile(r"^\..+\.[a-z0-9_]{8}\.partial$")


def _read_umask() -> int:
    """The process umask (read once at import: toggling it later would race with other threads' file creation)."""
    current = os.umask(0)
    os.umask(current)
    return current


_PROCESS_UMASK = _read_umask()


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:40]


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process; anything else: cannot tell, keep the file
        return True
    return True


def _is_stale(entry: os.DirEntry[str], host: str, now: float) -> bool:
    """Whether ``entry`` is a partial file of a save that can no longer finish."""
    owned = _OWNED_PARTIAL.match(entry.name)
    if owned is None and _UNOWNED_PARTIAL.match(entry.name) is None:
        return False  # not a name this module writes: never touched
    try:
        age = now - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    if age > STALE_PARTIAL_SECONDS:
        return True
    return owned is not None and owned["host"] == host and not _process_alive(int(owned["pid"]))


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Remove the partial files in ``folder`` that no running save will finish; returns what was removed.

    Partial files of running saves (this process, or another live process of this host) are left alone, and so
    is every file whose name is not one this module writes.
    """
    host, now, removed = _host_tag(), time.time(), []
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(PARTIAL_SUFFIX) and e.is_file(follow_symlinks=False)]
    except OSError:
        return removed
    for entry in entries:
        if _is_stale(entry, host, now):
            with contextlib.suppress(FileNotFoundError, PermissionError):  # another save may be cleaning too
                os.unlink(entry.path)
                removed.append(Path(entry.path))
                logger.info("Removed %s, left behind by a save that was killed before it finished.", entry.path)
    return removed


def _flush_to_disk(path: Path) -> None:
    """fsync ``path`` so the rename cannot reach the disk before the data (a power loss would leave an empty file)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_output_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; on success it is renamed onto ``final_path``.

    The temporary file lives in the same folder (same file system), so ``os.replace`` is atomic. On any
    exception, including ``KeyboardInterrupt`` and ComfyUI's interrupt, the temporary file is removed and
    whatever was at ``final_path`` before stays untouched. The writer must close what it opened on the path
    even when it fails (a writer that cannot promise that should use :func:`atomic_output_file`).
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final_path.parent)
    prefix = f".{final_path.name}.{_host_tag()}-{os.getpid()}."
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=PARTIAL_SUFFIX, dir=final_path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        # mkstemp makes 0600 files, and some writers recreate the file: set the usual mode on what was written.
        os.chmod(tmp_path, 0o666 & ~_PROCESS_UMASK)
        _flush_to_disk(tmp_path)
        os.replace(tmp_path, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_output_file(final_path: str | Path) -> Iterator[BinaryIO]:
    """Like :func:`atomic_output_path`, but yield an open binary file that is closed whatever the writer does.

    For writers that open the path themselves and leave it open when interrupted (Pillow closes its file only on
    ``Exception``, so a ``KeyboardInterrupt`` or ComfyUI's Cancel kept a handle on the deleted partial file).
    """
    with atomic_output_path(final_path) as tmp_path, open(tmp_path, "wb") as handle:
        yield handle
