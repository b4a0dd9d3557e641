"""Type aliases and size parsing shared by the datasets modules."""

from __future__ import annotations

import os
from typing import Tuple, Union

__all__ = ["PathLike", "SizeLike", "to_hw"]

PathLike = Union[str, "os.PathLike[str]"]
# An image size: one int for square, or (height, width).
SizeLike = Union[int, Tuple[int, int]]


def to_hw(size: SizeLike) -> Tuple[int, int]:
    """``(height, width)`` from an ``int`` (square) or a ``(height, width)`` pair."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)
