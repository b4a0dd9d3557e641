"""Pausing autocast for the small, launch-bound blocks of the head (expert layer, attention)."""
from __future__ import annotations

import contextlib
from typing import ContextManager, Optional, Tuple

import torch

__all__ = ["pause_autocast"]


def pause_autocast(device_type: str) -> Tuple[ContextManager, Optional[torch.dtype]]:
    """A context that turns autocast off on ``device_type``, and the dtype autocast had.

    Without autocast it returns a null context and None: no autocast context is entered, so
    tracing exporters (ONNX) see plain ops.
    """
    if not torch.is_autocast_enabled(device_type):
        return contextlib.nullcontext(), None
    return torch.autocast(device_type, enabled=False), torch.get_autocast_dtype(device_type)
