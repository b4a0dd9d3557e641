"""Test images that are also training images: byte-identical files on both sides of a split.

A test score over images the model trained on is inflated, and nothing else would show it: the
names usually differ (a copy renamed, a set merged twice). Files are compared by size first, so
only the few pairs of equal size are read and hashed.
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from .io import display_path
from .splits import DatasetSplits

__all__ = ["cross_split_duplicates", "leakage_warning"]


def _digest(path: Path) -> Optional[str]:
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None  # an unreadable file is the data check's to report


def _sizes(paths: Iterable[Path]) -> Dict[int, List[Path]]:
    by_size: Dict[int, List[Path]] = defaultdict(list)
    for path in paths:
        try:
            by_size[os.stat(path).st_size].append(path)
        except OSError:
            continue
    return by_size


def cross_split_duplicates(train: Iterable[Path], test: Iterable[Path]) -> List[Tuple[Path, Path]]:
    """``(training image, test image)`` pairs whose files hold the same bytes, in test order.

    Args:
        train: training image files.
        test: test image files.
    """
    train_sizes, test_sizes = _sizes(train), _sizes(test)
    pairs: List[Tuple[Path, Path]] = []
    for size in sorted(set(train_sizes) & set(test_sizes)):
        train_by_digest = {}
        for path in train_sizes[size]:
            train_by_digest.setdefault(_digest(path), path)
        train_by_digest.pop(None, None)
        pairs += [(train_by_digest[d], path) for path in test_sizes[size]
                  if (d := _digest(path)) is not None and d in train_by_digest]
    return pairs


def leakage_warning(splits: DatasetSplits, shown: int = 3) -> Optional[str]:
    """A warning naming the test images that are byte-identical to training images, or None.

    Only for layouts that declare their split (an image/mask pair folder lists the same samples
    as both, by design).
    """
    if not splits.split_declared or not splits.train:
        return None
    test = [s.image for samples in splits.tests.values() for s in samples]
    pairs = cross_split_duplicates([s.image for s in splits.train], test)
    if not pairs:
        return None
    listing = "; ".join(f"{display_path(a)} = {display_path(b)}" for a, b in pairs[:shown])
    more = f"; ... and {len(pairs) - shown} more" if len(pairs) > shown else ""
    return (f"Warning: {len(pairs)} test image(s) in {display_path(splits.root)} are byte-identical to training "
            f"images ({listing}{more}): their test scores measure memory, not detection. Remove them from one "
            f"split, or report the scores without them.")
