"""Timing primitives of the speed benchmark: CUDA events on GPUs, the host clock on CPU."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

__all__ = ["measure", "measure_interleaved", "peak_mb", "quartiles", "time_call", "time_once"]


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 5, iters: int = 20) -> float:
    """Median milliseconds of ``fn()`` over ``iters`` runs after ``warmup`` runs."""
    return statistics.median(measure_interleaved({"fn": fn}, device, warmup, iters)["fn"])


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call of ``fn``: CUDA events around it on a GPU, the host clock on CPU."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def measure_interleaved(
    fns: Dict[str, Callable[[], object]], device: torch.device, warmup: int = 5, iters: int = 20
) -> Dict[str, List[float]]:
    """Milliseconds of every timed call of each ``fns[name]``, the functions interleaved call by call.

    Each of the ``iters`` passes times one call of every function, the order reversed from one
    pass to the next, so that the i-th samples of two functions are a matched pair taken a few
    milliseconds apart. Launch-bound workloads are timed mostly in host time, and a shared host
    drifts: on an H100 host the backbone's eager inference moved between 10.7 and 21.8 ms from
    one block of 30 calls to the next within a minute, and the model's ratio to it, taken block
    by block, between 0.53 and 0.74.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(iters):
        for name in names if i % 2 == 0 else reversed(names):
            samples[name].append(time_call(fns[name], device))
    return samples


def quartiles(values: Sequence[float]) -> Dict[str, float]:
    """First quartile, median and third quartile of ``values``."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"q1": q1, "median": median, "q3": q3}


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``, waited for on the device."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def peak_mb(device: torch.device) -> Optional[float]:
    """Peak memory allocated on a CUDA ``device`` in MiB (None elsewhere)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
