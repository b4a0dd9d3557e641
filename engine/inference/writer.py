"""Image files written in background threads, so the GPU is not kept waiting on PNG encoding.

OpenCV releases the GIL while encoding, so a few threads encode in parallel with the forward
pass of the next batch.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from datasets.io import write_image

__all__ = ["ImageWriter"]


def _write(path: Path, image: np.ndarray, params: Sequence[int]) -> Path:
    # write_image, not cv2.imwrite: names that are not valid UTF-8 crash imwrite.
    return write_image(path, image, params)


class ImageWriter:
    """Writes images with :func:`datasets.io.write_image` in a thread pool; use as a context manager.

    Leaving the ``with`` block waits for every write and raises the first failure.

    Args:
        threads: encoding threads (None: up to 4).
    """

    def __init__(self, threads: Optional[int] = None) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads or max(1, min(4, (os.cpu_count() or 1))))
        self.pending: List[Future] = []

    def submit(self, path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
        """Queue ``image`` (BGR or grey uint8, as OpenCV expects) for writing to ``path``."""
        self.pending.append(self.pool.submit(_write, Path(path), image, tuple(params)))
        if len(self.pending) > 256:  # bound memory: drop finished futures, surface early errors
            done = [f for f in self.pending if f.done()]
            for f in done:
                f.result()
            self.pending = [f for f in self.pending if not f.done()]

    def close(self) -> None:
        """Wait for every queued write; raise the first error."""
        try:
            for f in self.pending:
                f.result()
        finally:
            self.pending = []
            self.pool.shutdown(wait=True)

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
