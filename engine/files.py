"""Atomic file writes for the engine: the writers of :mod:`datasets.files` and ``torch.save``.

Every file the project writes for later reading goes through :mod:`datasets.files` (the lowest
layer, which the synthetic-set writer shares); this module re-exports those writers and adds
:func:`atomic_torch_save` for checkpoints, which needs torch and the signal deferral of training.
"""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Optional

from datasets import PathLike
from datasets.files import (
    _LOW_FREE_BYTES,
    DiskFullError,
    FileWriteError,
    _disk_full,
    _free_space,
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    staged_path,
    write_error,
)

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
