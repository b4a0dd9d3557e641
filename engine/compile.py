"""``torch.compile`` with the settings this model needs."""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

__all__ = ["compile_model"]

_Fn = TypeVar("_Fn", bound=Callable)


def compile_model(model: _Fn, mode: str = "default") -> _Fn:
    """Compile ``model`` (one graph: the model has static shapes and no host syncs).

    Args:
        model: the module (or function, e.g. a loss) to compile; a module's parameters stay
            shared with the result.
        mode: torch.compile mode (``default``, ``reduce-overhead`` for CUDA graphs,
            ``max-autotune``).
    """
    import torch._inductor.config as inductor_config

    # Inductor's mixed-order reduction fusion fails on this model's LayerNorm/BatchNorm
    # reductions in torch 2.11 (an internal size assertion); the fusion is only an optimisation.
    if hasattr(inductor_config, "triton") and hasattr(inductor_config.triton, "mix_order_reduction"):
        inductor_config.triton.mix_order_reduction = False
    return torch.compile(model, mode=mode)
