"""Atomic file writes: every file the project writes for later reading goes through here.

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

# The one PathLike alias lives in datasets (which must not import engine); engine re-exports it.
from datasets import PathLike

__all__ = [
    "DiskFullError",
    "FileWriteError",
    "PathLike",
    "atomic_open",
    "atomic_torch_save",
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
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def _first_cause(exc: BaseException) -> Optional[BaseException]:
    """The first exception in ``exc``'s chain that is not a RuntimeError: what made torch fail."""
    seen = set()
    link = exc.__cause__ or exc.__context__
    while link is not None and id(link) not in seen:
        if not isinstance(link, RuntimeError):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def _torch_write_error(path: Path, exc: RuntimeError) -> BaseException:
    """What a failed ``torch.save`` into ``path``'s temporary file really was.

    torch's zip writer turns any failed write into "[enforce fail at inline_container.cc] ...
    unexpected pos" and keeps the real cause only in the exception chain: a KeyboardInterrupt
    is re-raised as itself, an OSError by its errno; with no cause left, a full disk is assumed
    only when free space is actually low (called before the temporary file is removed).
    """
    cause = _first_cause(exc)
    if cause is not None and not isinstance(cause, Exception):
        return cause  # KeyboardInterrupt, SystemExit: not a write problem at all
    if isinstance(cause, OSError):
        return write_error(path, cause)
    text = "torch: " + str(exc).splitlines()[0][:160]
    free = _free_space(path.parent)
    if free is not None and free < _LOW_FREE_BYTES:
        return _disk_full(path, text)
    return write_error(path, OSError(errno.EIO, text))


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path.

    SIGINT and SIGTERM arriving during the write are held until the file is complete (see
    :func:`~engine.training.signals.deferred_signals`): a second Ctrl-C while ``last.pt`` is
    being saved still stops the run, but right after the save instead of in the middle of it.

    Raises:
        FileWriteError: the file could not be written; :class:`DiskFullError` when the disk
            filled up (torch reports both as an ``inline_container`` RuntimeError).
    """
    import torch  # only the callers that save tensors pay for the import

    from engine.training.signals import deferred_signals

    path = Path(path)
    with deferred_signals():
        with atomic_open(path, "wb") as fh:
            try:
                torch.save(obj, fh)
            except RuntimeError as exc:
                text = str(exc)
                if "inline_container" not in text and "write failed" not in text:
                    raise
                err = _torch_write_error(path, exc)
                # A KeyboardInterrupt is raised as itself: chained to torch's error, which it
                # caused, its traceback would loop.
                raise err from (exc if isinstance(err, FileWriteError) else None)
    return path
