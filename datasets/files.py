"""Atomic file writes: every file the project writes for later reading goes through here.

The lowest layer of the project (``datasets`` writes the synthetic set and its manifest, ``engine``
checkpoints, masks, logs and reports), so both packages share one implementation.

A writer fills a temporary file in the destination's folder, flushes and fsyncs it, then
``os.replace``-s it over the destination. A process killed mid-write leaves the previous file
intact (or no file), never a truncated one; the rename is atomic because both names are on the
same file system. A write that fails raises :class:`FileWriteError` naming the file (its
subclass :class:`DiskFullError` when the disk is full), after removing the temporary file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Optional

from ._types import PathLike

__all__ = [
    "DiskFullError",
    "FileWriteError",
    "PathLike",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "staged_path",
    "write_error",
]


# "No space left on device" and "Disk quota exceeded".
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

# Below this much free space a write failure that names no cause (torch's zip writer) is taken
# for a full disk. Measured before the temporary file is removed, so a full disk shows near 0.
_LOW_FREE_BYTES = 64 * 2**20


class FileWriteError(OSError):
    """A file could not be written (read-only or missing folder, no permission, I/O error); the
    message names the file and keeps the original ``errno``."""


class DiskFullError(FileWriteError):
    """A file could not be written because its disk (or quota) is full; the message names the file."""


def _free_space(folder: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(path: Path, cause: str) -> DiskFullError:
    free = _free_space(path.parent)
    free_text = "free space unknown" if free is None else f"{free / 2**20:.0f} MiB free there now"
    exc = DiskFullError(
        f"Could not write {path}: the disk is full ({cause}; {free_text}). Free some space or write to a folder on "
        f"another disk, then run again; the previous {path.name}, if there was one, is intact."
    )
    exc.errno = errno.ENOSPC
    return exc


def write_error(path: PathLike, exc: OSError) -> FileWriteError:
    """The :class:`FileWriteError` (or :class:`DiskFullError`) to raise for ``exc``, naming ``path``.

    For writers that do not go through :func:`atomic_open` (appends to a log or a JSONL), so a
    read-only folder reads the same whichever file hit it first.
    """
    path = Path(path)
    if isinstance(exc, FileWriteError):
        return exc
    cause = exc.strerror or str(exc)
    if exc.errno in _FULL_ERRNOS:
        return _disk_full(path, cause)
    err = FileWriteError(
        f"Could not write {path}: {cause}. Check that {path.parent} is writable (permissions, a read-only or "
        f"unmounted disk) or write to another folder, then run again; the previous {path.name}, if there was one, "
        f"is intact."
    )
    err.errno = exc.errno  # only errno: with strerror or filename set, OSError.__str__ drops the message
    return err


@contextlib.contextmanager
def staged_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A hidden temporary file next to ``path`` (``.NAME.XXXX<suffix>``) for writers that take a
    file name; it replaces ``path`` only when the block exits cleanly.

    The file is flushed to disk before the rename (a crash after it must not leave a truncated
    ``path``; on some file systems a full disk shows only then) and gets the usual permissions
    (umask applied; ``mkstemp`` makes 0600 files). A block that raises, or is interrupted,
    removes the temporary file and leaves ``path`` as it was.

    Raises:
        FileWriteError: the folder or the temporary file cannot be created, or the file cannot
            be flushed or renamed (:class:`DiskFullError` when no space or quota is left); the
            message names ``path``. Errors raised by the block pass through unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        yield tmp
        try:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path``.

    Args:
        path: the destination (parent folders are created).
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: text encoding for ``"w"``.

    Yields:
        The open temporary file. If the block raises, the temporary file is removed and
        ``path`` is left as it was.

    Raises:
        ValueError: ``mode`` is not ``"w"`` or ``"wb"``.
        FileWriteError: the folder could not be created or the file not written (read-only
            disk, no permission...); :class:`DiskFullError` when no space is left (or the quota
            is exceeded). Other errors raised by the block pass through unchanged.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}.")
    with staged_path(path) as tmp:
        try:
            with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as fh:
                yield fh
        except OSError as exc:  # a write into the temporary file: the disk's fault, named after path
            if isinstance(exc, FileWriteError):
                raise
            raise write_error(path, exc) from exc


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and check that every byte landed; returns the path.

    The file's size on disk is compared with ``len(data)`` before the rename: a short write
    (a full disk that some file systems report only as a smaller file) is an error, never a
    truncated or empty file under the real name.

    Raises:
        FileWriteError: the bytes could not be written (:class:`DiskFullError` when the disk is full).
    """
    path = Path(path)
    data = memoryview(data).cast("B")
    with staged_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            size = os.stat(tmp).st_size
        except OSError as exc:
            raise write_error(path, exc) from exc
        if size != len(data):
            free = _free_space(path.parent)
            cause = f"{size} of {len(data)} bytes written"
            if free is not None and free < _LOW_FREE_BYTES:
                raise _disk_full(path, cause)
            raise write_error(path, OSError(errno.EIO, cause))
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)
