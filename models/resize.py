"""Bilinear resizing (``align_corners=False``) of feature maps and logits.

Two concerns, both exact:

* **Precision.** Autocast runs ``interpolate`` in fp32 (it is on autocast's fp32 list): a bf16
  map is copied to fp32, resized, and the fp32 result promotes the sum it feeds, which the next
  convolution casts back. :func:`resize` keeps a feature map in its own dtype; logits, which the
  losses and metrics read, go through :func:`resize_logits` in fp32.
* **Compiled backward.** Inductor decomposes bilinear upsampling into gathers, whose gradient
  is a scatter-add with atomics (``index_put``): in a compiled CamoXpert training step on an
  H100 (384 px, batch 16, bf16) those scatters took 0.72 ms of the 3.0 ms the head adds to
  the backbone. Under ``torch.compile`` an upsampling by whole factors is written instead as
  weighted sums of shifted copies (:func:`upsample_by_shifts`), the same numbers, which
  compile to fused elementwise kernels in both directions. Eager code, dynamic shapes (export)
  and other sizes keep ``F.interpolate``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["resize", "resize_logits", "upsample_by_shifts"]


def _upsample_axis(x: torch.Tensor, dim: int, factor: int) -> torch.Tensor:
    # Output index factor*i + p samples source coordinate i + (p + 0.5) / factor - 0.5: x[i]
    # blended with its neighbour before it (offset < 0) or after it (offset > 0). The edge
    # copies reproduce interpolate's clamping at the borders.
    n = x.shape[dim]
    padded = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)  # n + 2 along dim
    before, after = padded.narrow(dim, 0, n), padded.narrow(dim, 2, n)
    phases = []
    for p in range(factor):
        offset = (p + 0.5) / factor - 0.5
        phases.append(x + ((before if offset < 0 else after) - x) * abs(offset))
    return torch.stack(phases, dim=dim + 1).flatten(dim, dim + 1)  # (..., n * factor, ...)


def upsample_by_shifts(x: torch.Tensor, factors: Tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a (B, C, H, W) map by whole ``factors`` (fh, fw), as shifted sums.

    Equals ``F.interpolate(x, size=(H * fh, W * fw), mode="bilinear", align_corners=False)``
    up to rounding (computed in fp32, returned in ``x``'s dtype), in ``x``'s memory format.
    """
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    t = x.float()
    t = t.permute(0, 2, 3, 1) if channels_last else t  # (B, H, W, C) is contiguous for NHWC maps
    h_dim, w_dim = (1, 2) if channels_last else (2, 3)
    if factors[0] > 1:
        t = _upsample_axis(t, h_dim, factors[0])
    if factors[1] > 1:
        t = _upsample_axis(t, w_dim, factors[1])
    t = t.permute(0, 3, 1, 2) if channels_last else t  # back to (B, C, H', W')
    return t.to(x.dtype)


def _whole_factors(x: torch.Tensor, size: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """(fh, fw) when ``size`` is ``x``'s size times whole numbers (static shapes only), else None."""
    h, w = x.shape[-2:]
    if not _is_static(h, w, *size):  # symbolic (dynamic) shapes
        return None
    if size[0] % h or size[1] % w:
        return None
    return size[0] // h, size[1] // w


def _is_static(*sizes) -> bool:
    return all(type(s) is int for s in sizes)


def _bilinear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    # Interpolating to the same size is the identity. Only for static sizes: comparing a
    # symbolic size (an export with dynamic height and width) would fix it to the traced one.
    if _is_static(*x.shape[-2:], *size) and tuple(x.shape[-2:]) == size:
        return x
    # Not ``is_exporting()``: torch 2.11's dynamo folds it to True under torch.compile too. Export
    # traces dynamic heights and widths, which _whole_factors leaves to interpolate.
    if torch.compiler.is_compiling():
        factors = _whole_factors(x, size)
        if factors is not None:
            return upsample_by_shifts(x, factors)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of a (B, C, H, W) map to ``size``, in ``x``'s dtype."""
    with torch.autocast(x.device.type, enabled=False):
        return _bilinear(x, tuple(size))


def resize_logits(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of (B, 1, H, W) logits to ``size``, in fp32 (the losses and metrics read them)."""
    with torch.autocast(x.device.type, enabled=False):
        return _bilinear(x.float(), tuple(size))
