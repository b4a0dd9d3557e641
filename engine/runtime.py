"""Device and precision choices shared by every command."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch

__all__ = ["autocast_context", "autocast_dtype", "check_device_name", "resolve_device"]


def check_device_name(name: Optional[str]) -> None:
    """Refuse a device string torch does not parse (``foo``, ``cuda:x``), naming the valid forms.

    Raises:
        ValueError: saying what to pass instead.
    """
    if name in (None, "", "auto"):
        return
    try:
        torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N (e.g. cuda:0).") from None


def resolve_device(name: Optional[str] = "auto") -> torch.device:
    """``auto`` -> first CUDA GPU if present, else CPU; otherwise the named device.

    Raises:
        ValueError: an unknown device name, or a CUDA device asked for where CUDA is not available.
    """
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(name)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine/torch build. Use --device cpu.")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> Optional[torch.dtype]:
    """Mixed-precision dtype: bf16 where the GPU supports it, fp16 on older GPUs, None (fp32) on CPU.

    Args:
        device: the compute device.
        precision: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
    """
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"Unknown precision {precision!r}. Valid: auto, bf16, fp16, fp32.")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device, dtype: Optional[torch.dtype], cache: bool = True):
    """``torch.autocast`` for ``dtype``; a no-op for None or fp32.

    Args:
        device: the compute device.
        dtype: the autocast dtype.
        cache: keep low-precision copies of the weights for the outermost autocast block.
            CUDA-graph capture must turn it off (see :mod:`engine.inference.cuda_graph`).
    """
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)
