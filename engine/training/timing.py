"""Where a run's wall time goes: start-up, data wait, steps, validation, checkpoints, teardown, other."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator

__all__ = ["PHASES", "WallClock"]

PHASES = ("startup", "data_wait", "steps", "validation", "checkpoints", "teardown", "other")


class WallClock:
    """Adds wall seconds to named phases; what no phase claims is ``other``.

    Steps are launched asynchronously on a GPU: the time the GPU needs shows up where the host
    waits for it (the periodic loss read inside ``steps``, or the next batch copy in
    ``data_wait``), so ``steps + data_wait`` is the training time and the split between them
    is approximate.

    Args:
        clock: monotonic clock in seconds (tests pass a fake one).
        start: the run's start (e.g. process start); default: now.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter, start: float = None):
        self.clock = clock
        self.start = clock() if start is None else start
        self.seconds: Dict[str, float] = {p: 0.0 for p in PHASES}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the time inside the block towards ``name``."""
        t0 = self.clock()
        try:
            yield
        finally:
            self.seconds[name] += self.clock() - t0

    def elapsed(self) -> float:
        """Wall seconds since the start."""
        return self.clock() - self.start

    def summary(self, images: int) -> Dict[str, float]:
        """Seconds per phase, the total, and images trained per wall second.

        ``total_s`` runs from the start given to the constructor (the CLI passes the moment the
        process launched) to now; called after teardown, it is launch to exit but for the
        interpreter's own shutdown.
        """
        total = self.elapsed()
        out = {f"{p}_s": round(v, 3) for p, v in self.seconds.items() if p != "other"}
        out["other_s"] = round(max(0.0, total - sum(v for p, v in self.seconds.items() if p != "other")), 3)
        out["total_s"] = round(total, 3)
        out["images_trained"] = int(images)
        out["images_per_wall_s"] = round(images / max(total, 1e-9), 2)
        return out
