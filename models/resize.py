"""Bilinear resizing of feature maps in their own precision."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["resize"]


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of a (B, C, H, W) map to ``size``, in ``x``'s dtype.

    Autocast runs ``interpolate`` in fp32 (it is on autocast's fp32 list): a bf16 map is copied to
    fp32, resized, and the fp32 result promotes the sum it feeds, which the next convolution
    casts back. For feature maps that round trip buys nothing, so autocast is paused here and a
    bf16 map stays bf16. Logits keep the fp32 path (``F.interpolate`` directly).
    """
    with torch.autocast(x.device.type, enabled=False):
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
