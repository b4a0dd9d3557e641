"""Atomic file writes: every file the project writes for later reading goes through here.

A writer fills a temporary file in the destination's folder, flushes and fsyncs it, then
``os.replace``-s it over the destination. A process killed mid-write leaves the previous file
intact (or no file), never a truncated one; the rename is atomic because both names are on the
same file system. A write that fails because the disk is full raises :class:`DiskFullError`
naming the file, after removing the temporary file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

# The one PathLike alias lives in datasets (which must not import engine); engine re-exports it.
from datasets import PathLike

__all__ = ["DiskFullError", "PathLike", "atomic_open", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text"]


# "No space left on device" and "Disk quota exceeded".
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(OSError):
    """A file could not be written because its disk (or quota) is full; the message names the file."""


def _disk_full(path: Path, cause: str) -> DiskFullError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there now"
    except OSError:
        free = "free space unknown"
    exc = DiskFullError(
        f"Could not write {path}: the disk is full ({cause}; {free}). Free some space or write to a folder on "
        f"another disk, then run again; the previous {path.name}, if there was one, is intact."
    )
    exc.errno = errno.ENOSPC
    return exc


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
        DiskFullError: no space left (or quota exceeded) while writing.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            raise _disk_full(path, exc.strerror or str(exc)) from exc
        raise
    try:
        # mkstemp creates 0600 files; give the result the usual permissions (umask applied).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) and exc.errno in _FULL_ERRNOS:
            raise _disk_full(path, exc.strerror or str(exc)) from exc
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path.

    Raises:
        DiskFullError: the disk filled up (torch reports it as an ``inline_container`` RuntimeError).
    """
    import torch  # only the callers that save tensors pay for the import

    try:
        with atomic_open(path, "wb") as fh:
            torch.save(obj, fh)
    except RuntimeError as exc:
        # torch's zip writer turns a failed write (in practice: no space left) into
        # "[enforce fail at inline_container.cc] ... file write failed".
        text = str(exc)
        if "inline_container" in text or "write failed" in text:
            raise _disk_full(Path(path), "torch: " + text.splitlines()[0][:160]) from exc
        raise
    return Path(path)
