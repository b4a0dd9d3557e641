"""torchrun/DDP plumbing: detect the launch, pick the backend, reduce values across ranks.

A run is distributed when torchrun set ``RANK`` (as in nanoGPT). NCCL is used on GPUs, gloo
on CPU, so ``torchrun --nproc_per_node 2 ... --device cpu`` works on a laptop.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "all_gather_objects",
    "all_reduce_max",
    "all_reduce_sum",
    "barrier",
    "cleanup_distributed",
    "init_distributed",
]


@dataclass
class DistContext:
    """Where this process sits in the run.

    Attributes:
        rank: global rank (0 when not distributed).
        local_rank: rank on this host (selects the GPU).
        world_size: number of processes.
        device: this process's compute device.
        distributed: whether a process group is up.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs and writes files."""
        return self.rank == 0


def init_distributed(device: torch.device, timeout_minutes: float = 30.0) -> DistContext:
    """Join the torchrun process group if ``RANK`` is set; otherwise a single-process context.

    Args:
        device: the device asked for (``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun).
        timeout_minutes: collective timeout (validation on rank 0 alone must fit in it).
    """
    if int(os.environ.get("RANK", -1)) < 0 or int(os.environ.get("WORLD_SIZE", 1)) < 1:
        return DistContext(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    return DistContext(rank, local_rank, world_size, device, True)


def cleanup_distributed() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity in a single process)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Max of ``tensor`` over ranks in place (identity in a single process)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_objects(obj: Any) -> List[Any]:
    """Picklable ``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if not _active():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _active():
        dist.barrier()
