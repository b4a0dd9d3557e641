"""Measure the data pipeline: decode + augment throughput of one loader worker.

The GPU is only as fast as its input: at the ~500 img/s the EdgeNeXt
backbone can train at, a loader needs ~10 workers at 50 img/s each. This
benchmark writes ~800 px JPEG/PNG pairs (synthetic scenes), then times the
training ``CODDataset`` path on them single-threaded, like one DataLoader
worker on one core.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import cv2
import numpy as np

from .cod import CODDataset
from .splits import SampleRef
from .synthetic_scene import make_scene
from .transforms import build_train_transform
from .workers import limit_cpu_threads

__all__ = ["LoaderSpec", "benchmark_data_pipeline"]


@dataclass(frozen=True)
class LoaderSpec:
    """How the samples are loaded while they are timed.

    Attributes:
        workers: 0 measures one worker's work in this process, single-threaded;
            ``> 0`` measures a ``DataLoader`` with that many worker processes
            (total throughput).
        batch_size: DataLoader batch size when ``workers > 0``.
    """

    workers: int = 0
    batch_size: int = 16


@dataclass(frozen=True)
class _Budget:
    """How long to time: ``num_iters`` samples when set, else ``seconds`` of wall time."""

    seconds: float
    num_iters: Optional[int]

    def more(self, n: int, start: float) -> bool:
        """Whether to load more, with ``n`` samples timed since ``start`` (``perf_counter``)."""
        if self.num_iters is not None:
            return n < self.num_iters
        return time.perf_counter() - start < self.seconds


def _write_sources(folder: Path, n: int, src_size: int, seed: int) -> list:
    """Write ``n`` synthetic ``src_size`` px JPEG/PNG pairs into ``folder``; their sample references."""
    samples = []
    for i in range(n):
        rng = np.random.default_rng([seed, 2, i])
        image, mask, _ = make_scene(rng, src_size, camouflaged=True)
        image_path = folder / f"bench-{i:04d}.jpg"
        mask_path = folder / f"bench-{i:04d}.png"
        cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        cv2.imwrite(str(mask_path), mask)
        samples.append(SampleRef.from_paths(image_path, mask_path))
    return samples


def benchmark_data_pipeline(
    img_size: int = 384,
    n_images: int = 32,
    src_size: int = 800,
    seconds: float = 5.0,
    num_iters: Optional[int] = None,
    loader: Optional[LoaderSpec] = None,
    aug: Optional[Mapping[str, Any]] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """Time decode + training augmentation from ``src_size`` px JPEGs.

    Args:
        img_size: Training image size.
        n_images: Distinct source images written (cycled through).
        src_size: Side of the square source JPEGs.
        seconds: Time budget of the measurement (ignored if ``num_iters`` is set).
        num_iters: Exact number of samples to load instead of a time budget.
        loader: Worker processes and batch size; ``None`` measures one worker's
            work in this process (see :class:`LoaderSpec`).
        aug: Overrides of the training augmentation.
        seed: Seed of the source images.

    Returns:
        JSON-able dict: ``img_per_s``, ``ms_per_img``, ``decode_ms`` and
        ``augment_ms`` (per image, ``workers=0`` only), ``img_size``,
        ``src_size``, ``n`` (samples timed), ``workers``, ``seconds``.
    """
    loader = loader if loader is not None else LoaderSpec()
    budget = _Budget(seconds, num_iters)
    with tempfile.TemporaryDirectory(prefix="camoxpert-bench-") as tmp:
        samples = _write_sources(Path(tmp), n_images, src_size, seed)
        # As train's loader runs it: uint8 out, normalised later on the device.
        dataset = CODDataset(samples, build_train_transform(img_size, aug, normalize=False))
        result: Dict[str, Any] = {"img_size": img_size, "src_size": src_size, "workers": loader.workers}
        if loader.workers == 0:
            n, elapsed, per_stage = _time_in_process(dataset, budget)
            result.update(per_stage)
        else:
            n, elapsed = _time_data_loader(dataset, loader, budget)
        result.update(
            img_per_s=n / elapsed,
            ms_per_img=1000 * elapsed / n,
            n=n,
            seconds=elapsed,
        )
        return result


def _time_in_process(dataset: CODDataset, budget: _Budget) -> Tuple[int, float, Dict[str, float]]:
    """Time decoding and augmenting apart, single-threaded, as one DataLoader worker on one core does.

    Returns:
        ``(samples timed, seconds, {"decode_ms": ..., "augment_ms": ...})``, the
        stage times per image. The thread counts of OpenCV and torch are restored.
    """
    import torch

    cv2_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    limit_cpu_threads()
    try:
        dataset[0]  # warm-up: first calls pay for lazy initialisation
        decode_s = augment_s = 0.0
        n = 0
        start = time.perf_counter()
        while budget.more(n, start):
            index = n % len(dataset)
            t0 = time.perf_counter()
            image, mask, _ = dataset.load(index)
            t1 = time.perf_counter()
            dataset.transform(image=image, mask=mask)
            t2 = time.perf_counter()
            decode_s += t1 - t0
            augment_s += t2 - t1
            n += 1
        elapsed = time.perf_counter() - start
    finally:
        cv2.setNumThreads(cv2_threads)
        torch.set_num_threads(torch_threads)
    return n, elapsed, {"decode_ms": 1000 * decode_s / n, "augment_ms": 1000 * augment_s / n}


def _time_data_loader(dataset: CODDataset, loader: LoaderSpec, budget: _Budget) -> Tuple[int, float]:
    """Time a shuffling ``DataLoader`` with ``loader.workers`` processes: total throughput.

    Returns:
        ``(samples timed, seconds)``; the loader is restarted when it runs out.
    """
    from torch.utils.data import DataLoader

    from .workers import worker_init_fn

    data = DataLoader(dataset, batch_size=loader.batch_size, shuffle=True, num_workers=loader.workers,
                      worker_init_fn=worker_init_fn, persistent_workers=True, drop_last=False)
    iterator = iter(data)
    next(iterator)  # warm-up: workers start
    n = 0
    start = time.perf_counter()
    while budget.more(n, start):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(data)
            batch = next(iterator)
        n += int(batch["image"].shape[0])
    elapsed = time.perf_counter() - start
    del iterator, data
    return n, elapsed
