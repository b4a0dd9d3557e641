"""A DistributedSampler that can start mid-epoch, for exact resumption."""
from __future__ import annotations

from typing import Iterator, Optional

from torch.utils.data import Dataset, DistributedSampler

__all__ = ["ResumableDistributedSampler"]


class ResumableDistributedSampler(DistributedSampler):
    """:class:`~torch.utils.data.DistributedSampler` whose epoch can start at a given position.

    The order of an epoch depends only on ``seed + epoch`` (``set_epoch``), as in the parent;
    ``set_start_index(i)`` skips this rank's first ``i`` indices, so a run resumed after ``k``
    batches sees exactly the batches the uninterrupted run would have seen next. Used with one
    replica too, so single-process and DDP runs shuffle the same way.

    Args:
        dataset: the dataset.
        num_replicas: world size.
        rank: this process's rank.
        shuffle: shuffle each epoch.
        seed: shuffle seed (the same on every rank).
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start_index = 0

    def set_start_index(self, start_index: Optional[int]) -> None:
        """Skip this many of this rank's indices in the current epoch (reset by the caller)."""
        self.start_index = max(0, int(start_index or 0))

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start_index:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start_index)
