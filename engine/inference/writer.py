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
from typing import Any, Callable, Deque, Optional, Sequence

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

    Leaving the ``with`` block waits for every write and raises the first failure.

    Args:
        threads: encoding threads (None: :func:`default_writer_threads`).
        max_pending: queued jobs before :meth:`submit` waits for the oldest one (None: 16 per
            thread, a few MB of 800-px masks each).
    """

    def __init__(self, threads: Optional[int] = None, max_pending: Optional[int] = None) -> None:
        n = int(threads) if threads else default_writer_threads()
        self.pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="image-writer")
        self.max_pending = int(max_pending) if max_pending else 16 * n
        self.pending: Deque[Future] = deque()
        self.written = 0

    def submit(self, path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
        """Queue ``image`` (BGR or grey uint8, as OpenCV expects) for writing to ``path``."""
        self.call(_write, Path(path), image, tuple(params))

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` (e.g. make an overlay and write it); waits while the queue is full."""
        while self.pending and (len(self.pending) >= self.max_pending or self.pending[0].done()):
            self.pending.popleft().result()  # raises the first failure early
            self.written += 1
        self.pending.append(self.pool.submit(fn, *args))

    def close(self) -> None:
        """Wait for every queued write; raise the first error."""
        try:
            while self.pending:
                self.pending.popleft().result()
                self.written += 1
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
