"""Tiny image/mask files for the datasets tests (32-64 px, written with OpenCV)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Tuple

import cv2
import numpy as np


def write_image(path: Path, size: Tuple[int, int] = (32, 48), seed: int = 0, gray: bool = False) -> Path:
    """Write a random-texture image of ``size`` (h, w); format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = size if gray else (*size, 3)
    image = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (5, 5), 0)
    assert cv2.imwrite(str(path), image), path
    return path


def write_mask(path: Path, size: Tuple[int, int] = (32, 48), soft: bool = False) -> Path:
    """Write a mask with a filled rectangle in the middle (optionally blurred edges)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    mask = np.zeros(size, np.uint8)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    if soft:
        mask = cv2.GaussianBlur(mask, (7, 7), 2)
    assert cv2.imwrite(str(path), mask), path
    return path


def write_pairs(
    image_dir: Path,
    mask_dir: Optional[Path],
    names: Iterable[str],
    size: Tuple[int, int] = (32, 48),
    image_ext: str = ".jpg",
    mask_ext: str = ".png",
) -> None:
    """Write one image (and, if ``mask_dir``, one mask) per name."""
    image_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_image(image_dir / f"{name}{image_ext}", size, seed=i)
        if mask_dir is not None:
            write_mask(mask_dir / f"{name}{mask_ext}", size)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
