"""Atomic file writes: every file the project writes for later reading goes through here.

A writer fills a temporary file in the destination's folder, flushes and fsyncs it, then
``os.replace``-s it over the destination. A process killed mid-write leaves the previous file
intact (or no file), never a truncated one; the rename is atomic because both names are on the
same file system.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

# The one PathLike alias lives in datasets (which must not import engine); engine re-exports it.
from datasets import PathLike

__all__ = ["PathLike", "atomic_open", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text"]


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
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
    """``torch.save(obj)`` to ``path`` atomically; returns the path."""
    import torch  # only the callers that save tensors pay for the import

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)
