"""DataLoader worker set-up: one OpenCV thread per worker, distinct augmentation seeds."""

from __future__ import annotations

import random

import cv2
import numpy as np

__all__ = ["limit_cpu_threads", "seed_transform", "worker_init_fn"]


def limit_cpu_threads() -> None:
    """Make OpenCV (and torch, if loaded) run single-threaded in this process.

    Each DataLoader worker is already one process per core; OpenCV's own
    thread pool on top of that oversubscribes the cores and makes every
    worker slower.
    """
    cv2.setNumThreads(0)  # 0: OpenCV runs its functions sequentially
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the data stack does not need torch to decode
        pass


def seed_transform(transform, seed: int) -> None:
    """Give an albumentations pipeline its own generators, seeded with ``seed``.

    Every op of the pipeline draws from one shared generator pair (not ``set_random_seed``,
    which gives every op the same seed and so correlates e.g. the flip with the crop).
    Objects without ``set_random_state`` (no transform, or not albumentations) are left alone.

    Args:
        transform: the pipeline (``A.Compose``) or None.
        seed: a non-negative int.
    """
    if transform is not None and hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)`` for datasets of this package.

    Besides :func:`limit_cpu_threads`, it reseeds the dataset's
    albumentations pipeline: albumentations 2.x keeps its own random
    generator, created in the parent process, so every forked worker would
    otherwise draw the same augmentations. The seed comes from
    ``torch.initial_seed()``, which differs per worker and per epoch.

    Args:
        worker_id: Worker index (given by the DataLoader).
    """
    import torch

    limit_cpu_threads()
    # The DataLoader itself already seeded Python's and NumPy's global generators per worker.
    seed = torch.initial_seed() % 2**32
    info = torch.utils.data.get_worker_info()
    if info is not None:
        _reseed_transforms(info.dataset, seed)


def _reseed_transforms(dataset, seed: int) -> None:
    # Walk Subset(.dataset) and ConcatDataset(.datasets) wrappers.
    stack, seen = [dataset], set()
    while stack:
        ds = stack.pop()
        if ds is None or id(ds) in seen:
            continue
        seen.add(id(ds))
        seed_transform(getattr(ds, "transform", None), seed)
        stack.append(getattr(ds, "dataset", None))
        stack.extend(getattr(ds, "datasets", None) or [])
