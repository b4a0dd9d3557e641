"""Image files written in background threads, so the GPU is not kept waiting on PNG encoding.

OpenCV releases the GIL while encoding (and NumPy while writing the bytes), so a few threads
encode in parallel with the forward pass of the next batch. The queue is bounded: when the
threads fall behind, :meth:`ImageWriter.submit` waits for the oldest write, so memory stays flat
however many images a job has.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

import numpy as np

from datasets.io import write_image

__all__ = ["ImageWriter", "default_writer_threads"]


def default_writer_threads() -> int:
    """Encoding threads: a quarter of the cores, 2 to 8.

    An 800x800 probability map takes a core about 3 ms to encode as PNG (OpenCV's default,
    fast setting), so 4 threads keep up with over 1,000 masks a second.
    """
    return max(2, min(8, (os.cpu_count() or 1) // 4))


def _write(path: Path, image: np.ndarray, params: Sequence[int]) -> Path:
    # write_image, not cv2.imwrite: names that are not valid UTF-8 crash imwrite.
    return write_image(path, image, params)


class ImageWriter:
    """Writes images with :func:`datasets.io.write_image` in a thread pool; use as a context manager.

    A write that fails (full disk, read-only folder) does not stop the others: it is recorded in
    :attr:`failed` with its reason, and the files written are in :attr:`written`, so the caller
    can name every file that did not land. Other errors (a bug in a job) are raised.

    Args:
        threads: encoding threads (None: :func:`default_writer_threads`).
        max_pending: queued jobs before :meth:`submit` waits for the oldest one (None: 16 per
            thread, a few MB of 800-px masks each).

    Attributes:
        written: files written, in the order their writes finished.
        failed: ``(path, reason)`` for each file that could not be written.
    """

    def __init__(self, threads: Optional[int] = None, max_pending: Optional[int] = None) -> None:
        n = int(threads) if threads else default_writer_threads()
        self.pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="image-writer")
        self.max_pending = int(max_pending) if max_pending else 16 * n
        self.pending: Deque[Tuple[Path, Future]] = deque()
        self.written: List[Path] = []
        self.failed: List[Tuple[Path, str]] = []

    def submit(self, path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
        """Queue ``image`` (BGR or grey uint8, as OpenCV expects) for writing to ``path``."""
        self.call(Path(path), _write, Path(path), image, tuple(params))

    def call(self, target: Path, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``, which writes ``target`` (e.g. make an overlay and write it); waits
        while the queue is full."""
        while self.pending and (len(self.pending) >= self.max_pending or self.pending[0][1].done()):
            self._collect(*self.pending.popleft())
        self.pending.append((Path(target), self.pool.submit(fn, *args)))

    def _collect(self, target: Path, future: Future) -> None:
        try:
            future.result()
        except OSError as exc:  # FileWriteError and encoder errors: this file's problem, not the job's
            self.failed.append((target, str(exc)))
        else:
            self.written.append(target)

    def close(self) -> None:
        """Wait for every queued write; raise the first error that is not a failed write."""
        try:
            while self.pending:
                self._collect(*self.pending.popleft())
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
