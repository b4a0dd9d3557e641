"""DataLoaders of a run: one persistent training loader for the whole run, one for validation.

The training loader is created once. Its batch sampler walks through the epochs itself and
yields ``(epoch, index, light)`` keys, so worker processes stay alive across epochs, prefetch
across epoch boundaries, and still know which epoch's augmentation draws to make (a
:class:`~engine.training.data.SeededAugmentDataset` seeds each sample from its key). Starting
at ``(epoch, batch)`` gives exactly the batches an uninterrupted run would see next.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from engine.training.sampling import ResumableDistributedSampler

__all__ = [
    "MAX_AUTO_WORKERS",
    "RunBatchSampler",
    "RunLoaders",
    "auto_num_workers",
    "LoaderSettings",
    "build_loaders",
    "shutdown_loader",
    "usable_cpus",
    "val_subset",
]

#: Most training-loader workers per process that ``data.num_workers: null`` starts on a GPU.
MAX_AUTO_WORKERS = 8


def usable_cpus() -> int:
    """CPU cores this process may run on: its affinity mask (which containers and job schedulers
    narrow), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def auto_num_workers(device_type: str, processes_per_host: int = 1) -> int:
    """Training-loader workers per process for ``data.num_workers: null`` (the default).

    On a GPU, one per core (the cores shared between the training processes of this host), up to
    :data:`MAX_AUTO_WORKERS`: 4 on a 4-core Kaggle machine, 2 on a 2-core Colab one, 8 on a
    16-core server. Measured on an H200 host (16 cores; edgenext_small, 384 px, batch 8, the
    built-in data, 100-s budget): two workers kept the step waiting for data 58% of the run (396
    images per second, launch to exit), four kept up (1%, 492), fifteen did no better (491).
    On the CPU, 2: the training step itself needs the cores.
    """
    cores = usable_cpus() // max(1, int(processes_per_host))
    if device_type != "cuda":
        return max(1, min(2, cores))
    return max(1, min(MAX_AUTO_WORKERS, cores))


class RunBatchSampler(Sampler[List[Tuple[int, int, bool]]]):
    """Batches of ``(epoch, index, light)`` keys over every epoch of a run, endlessly.

    Each epoch is shuffled as :class:`ResumableDistributedSampler` shuffles it (seed + epoch,
    this rank's share) and cut into ``batch_size`` batches, the incomplete last one dropped.

    Args:
        sampler: the per-epoch index sampler of this rank.
        batch_size: images per batch.
        start_epoch: first epoch to yield.
        start_batch: batches of ``start_epoch`` to skip.

    Attributes:
        light: set to True to ask for the light augmentation from the next batch drawn on.
    """

    def __init__(self, sampler: ResumableDistributedSampler, batch_size: int, start_epoch: int = 0,
                 start_batch: int = 0):
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.start_epoch = int(start_epoch)
        self.start_batch = int(start_batch)
        self.light = False

    @property
    def batches_per_epoch(self) -> int:
        """Full batches per epoch on this rank."""
        return self.sampler.num_samples // self.batch_size

    def __iter__(self) -> Iterator[List[Tuple[int, int, bool]]]:
        epoch, skip = self.start_epoch, self.start_batch
        while True:
            self.sampler.set_epoch(epoch)
            self.sampler.set_start_index(0)
            order = list(self.sampler)
            for b in range(skip, self.batches_per_epoch):
                chunk = order[b * self.batch_size:(b + 1) * self.batch_size]
                yield [(epoch, i, self.light) for i in chunk]
            epoch, skip = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs a number for its own len()
        return 2**62


@dataclass
class RunLoaders:
    """Loaders of one run.

    Attributes:
        train: endless training loader (iterate once for the whole run).
        batch_sampler: its batch sampler (epoch bookkeeping, light augmentation switch).
        val: validation loader over this rank's share of the held-out images.
        batches_per_epoch: training batches per epoch and rank.
    """

    train: DataLoader
    batch_sampler: RunBatchSampler
    val: DataLoader
    batches_per_epoch: int

    def close(self) -> None:
        """Stop both loaders' worker processes now (see :func:`shutdown_loader`)."""
        shutdown_loader(self.train)
        shutdown_loader(self.val)


def shutdown_loader(loader: DataLoader) -> None:
    """Stop a DataLoader's persistent worker processes at once, dropping what they prefetched.

    Left to garbage collection, PyTorch shuts workers down one after the other, joining each
    with a 5-s timeout while it finishes the batch in hand: with 12 busy workers prefetching
    that is up to a minute after the run's last line. The run needs nothing they hold, so they
    are terminated first; PyTorch's own shutdown then only stops the pin-memory thread and
    closes the queues. Safe to call twice, and on loaders without workers.
    """
    it = getattr(loader, "_iterator", None)  # persistent workers live in the loader's iterator
    if it is None:
        return
    for worker in getattr(it, "_workers", ()):
        if worker.is_alive():
            worker.terminate()
    for worker in getattr(it, "_workers", ()):
        worker.join(timeout=1.0)
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    loader._iterator = None


def val_subset(n: int, max_images: int) -> List[int]:
    """Indices of the validation images scored during training: all ``n``, or ``max_images`` of
    them evenly spread (sorted, deterministic) when ``0 < max_images < n``."""
    if max_images <= 0 or max_images >= n:
        return list(range(n))
    return sorted({int(i * n / max_images) for i in range(max_images)})


def _worker_init_fn() -> Optional[Callable[[int], None]]:
    try:
        from datasets import worker_init_fn

        return worker_init_fn  # one OpenCV thread per worker
    except ImportError:
        return None


@dataclass(frozen=True)
class LoaderSettings:
    """How the run's loaders batch, shard and seed the data.

    Attributes:
        batch_size: training images per batch and process.
        eval_batch_size: validation images per batch.
        num_workers: loader worker processes (0: load in the main process).
        seed: run seed (shuffling, worker seeds).
        rank: this process's rank.
        world_size: processes in the run.
        pin_memory: pin host batches (CUDA).
        start_epoch: epoch to start from (resume).
        start_batch: batch of ``start_epoch`` to start from (resume).
        prefetch_factor: batches each worker loads ahead.
        max_val_images: > 0 validates on a fixed subset of that many held-out images, spread
            evenly over the split (the same images at every validation, so S-measures stay
            comparable); 0: all of them.
    """

    batch_size: int
    eval_batch_size: int
    num_workers: int = 0
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    pin_memory: bool = False
    start_epoch: int = 0
    start_batch: int = 0
    prefetch_factor: int = 4
    max_val_images: int = 0


def build_loaders(train_set: Dataset, val_set: Dataset, settings: LoaderSettings) -> RunLoaders:
    """Build the run's loaders (see the module docstring).

    Args:
        train_set: training dataset (keys from :class:`RunBatchSampler`).
        val_set: validation dataset.
        settings: batching, sharding and seeding.

    Raises:
        ValueError: fewer training images per process than one batch.
    """
    c = settings
    rank, world_size = c.rank, c.world_size
    sampler = ResumableDistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=c.seed)
    batches = RunBatchSampler(sampler, c.batch_size, c.start_epoch, c.start_batch)
    if batches.batches_per_epoch < 1:
        raise ValueError(
            f"train.batch_size={c.batch_size} is larger than the {sampler.num_samples} training images per process "
            f"({len(train_set)} in all, {world_size} process(es)): lower --batch-size."
        )
    workers = int(c.num_workers)
    extra = dict(persistent_workers=True, prefetch_factor=c.prefetch_factor) if workers > 0 else {}
    # The generator keeps the loader from drawing its worker seed from the global torch RNG,
    # whose state (router noise) is saved and restored on resume.
    gen = torch.Generator().manual_seed(c.seed + 7919 * rank)
    train = DataLoader(train_set, batch_sampler=batches, num_workers=workers, pin_memory=c.pin_memory,
                       generator=gen, worker_init_fn=_worker_init_fn(), **extra)
    chosen = val_subset(len(val_set), c.max_val_images)
    val_idx = chosen[rank::world_size]  # each rank scores its own shard, no padding
    val_workers = min(workers, 2)  # validation is short; two workers keep up without doubling the memory
    # Its own generator too: each pass over it would otherwise draw a seed from the global torch RNG,
    # and a resumed run (whose validation cache starts empty) would draw where the first did not.
    val = DataLoader(Subset(val_set, val_idx), batch_size=c.eval_batch_size, shuffle=False, num_workers=val_workers,
                     pin_memory=c.pin_memory, worker_init_fn=_worker_init_fn(), generator=torch.Generator().manual_seed(c.seed),
                     **(dict(persistent_workers=True) if val_workers > 0 else {}))
    return RunLoaders(train, batches, val, batches.batches_per_epoch)
