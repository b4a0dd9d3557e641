"""CUDA-graph replay for the input shapes a run feeds repeatedly; eager for everything else.

Prediction feeds one shape over and over (a fixed network size, a fixed batch), which is the
case CUDA graphs are made for: replaying a captured graph runs the same kernels as eager mode
without paying their launch cost, so the result is the same computation, only faster.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Hashable, Optional, Tuple

import torch
import torch.nn as nn

from engine.inference.cuda_graph import CudaGraphInference

__all__ = ["GraphedForward"]


class GraphedForward:
    """Calls ``model(x)``, replaying a captured CUDA graph for shapes that recur.

    A shape is captured the ``capture_after + 1``-th time it is seen, and at most ``max_graphs``
    shapes are kept (each holds its own memory pool). A smaller batch of a captured shape (a
    folder's last batch) replays that graph in its first rows instead of running eagerly, which
    would cost a cuDNN autotuning pass for a shape seen once. On CPU every call is eager.

    The returned tensor belongs to the graph and is overwritten by the next call with the same
    shape: use it (or copy it) before calling again.

    Args:
        model: the network in eval mode.
        dtype: autocast dtype the graphs are captured with (None for fp32); eager calls run
            under whatever autocast the caller has set, which should be the same.
        capture_after: eager calls of a shape before it is captured.
        max_graphs: the most shapes captured.
    """

    def __init__(self, model: nn.Module, dtype: Optional[torch.dtype], capture_after: int = 1,
                 max_graphs: int = 4) -> None:
        self.model = model
        self.dtype = dtype
        self.capture_after = int(capture_after)
        self.max_graphs = int(max_graphs)
        self.graphs: Dict[Hashable, CudaGraphInference] = {}
        self._seen: Counter = Counter()

    @staticmethod
    def _key(x: torch.Tensor) -> Tuple:
        return tuple(x.shape), x.dtype, str(x.device), x.is_contiguous()

    def _larger(self, x: torch.Tensor) -> Optional[CudaGraphInference]:
        """The captured graph with the fewest rows that can take ``x`` in its first rows."""
        fits = [g for g in self.graphs.values() if g.accepts(x)]
        return min(fits, key=lambda g: g.batch_size) if fits else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cuda":
            return self.model(x)
        key = self._key(x)
        graph = self.graphs.get(key) or self._larger(x)
        if graph is None:
            self._seen[key] += 1
            if self._seen[key] <= self.capture_after or len(self.graphs) >= self.max_graphs:
                return self.model(x)
            with torch.cuda.device(x.device):  # capture streams must live on the input's GPU (cuda:N)
                graph = self.graphs[key] = CudaGraphInference(self.model, x, self.dtype)
        return graph(x)
