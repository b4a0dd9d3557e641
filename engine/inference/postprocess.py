"""From a probability map at the network's resolution to the map that is saved and scored.

``predict`` and ``evaluate`` share these so a saved mask and a scored prediction are the same
bytes: bilinear resize to the target size (never the ground truth), then ``round(prob * 255)``.
torch is imported inside the functions: metric worker processes that import this module to
score images start without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["ArrayLike", "masks_at_sizes", "quantize_probability", "resize_prediction", "resize_probability"]

ArrayLike = Union[np.ndarray, "torch.Tensor"]


def resize_probability(prob: ArrayLike, size: Sequence[int]) -> "torch.Tensor":
    """Resize one probability map to ``size`` (bilinear), keeping it float.

    Args:
        prob: ``(H, W)`` (or ``(1, H, W)`` / ``(1, 1, H, W)``) probabilities in [0, 1], a numpy
            array or tensor (on any device); a uint8 map is read as ``value / 255``.
        size: target ``(height, width)``.

    Returns:
        ``(height, width)`` float32 tensor in [0, 1] on ``prob``'s device.
    """
    import torch
    import torch.nn.functional as F

    h, w = int(size[0]), int(size[1])
    t = torch.from_numpy(np.ascontiguousarray(prob)) if isinstance(prob, np.ndarray) else prob.detach()
    shape = tuple(t.shape)
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    while t.dim() > 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2:
        raise ValueError(f"Expected one (H, W) probability map; got shape {shape}.")
    if tuple(t.shape) != (h, w):
        # align_corners=False matches cv2.INTER_LINEAR and the COD evaluation scripts.
        t = F.interpolate(t[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return t.clamp(0.0, 1.0)


def quantize_probability(prob: "torch.Tensor") -> np.ndarray:
    """``round(prob * 255)`` as a uint8 numpy array (what is saved and scored)."""
    import torch

    return (prob.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


def resize_prediction(prob: ArrayLike, size: Sequence[int]) -> np.ndarray:
    """Resize a probability map to ``size`` (bilinear) and return it as uint8.

    This is how predictions reach the ground truth's size for evaluation (the ground truth is
    never resized), and the input image's size for ``predict``.

    Args:
        prob: ``(H, W)`` (or ``(1, H, W)`` / ``(1, 1, H, W)``) probabilities in [0, 1], a
            numpy array or tensor; a uint8 map is read as ``value / 255``.
        size: target ``(height, width)``.

    Returns:
        ``(height, width)`` uint8 map, ``round(prob * 255)`` after resizing.
    """
    return quantize_probability(resize_probability(prob, size))


def masks_at_sizes(probs: "torch.Tensor", sizes: Sequence[Sequence[int]],
                   threshold: Optional[float] = None) -> List["torch.Tensor"]:
    """Masks at each image's own size, computed on ``probs``' device in one call per distinct size.

    Equal, map for map, to :func:`resize_probability` followed by :func:`quantize_probability`
    (or, with ``threshold``, ``255`` where the resized probability is ``>= threshold``), but the
    images that share a size are resized together and nothing leaves the device.

    Args:
        probs: ``(B, 1, h, w)`` float32 probabilities.
        sizes: ``B`` target ``(height, width)``.
        threshold: None for 8-bit probability maps, else binary 0/255 masks.

    Returns:
        ``B`` uint8 ``(H_i, W_i)`` tensors on ``probs``' device, in input order.
    """
    import torch
    import torch.nn.functional as F

    if probs.dim() != 4 or probs.shape[1] != 1 or probs.shape[0] != len(sizes):
        raise ValueError(f"Expected (B, 1, h, w) probabilities for {len(sizes)} sizes; got {tuple(probs.shape)}.")
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault((int(s[0]), int(s[1])), []).append(i)
    out: List[Optional["torch.Tensor"]] = [None] * len(sizes)
    for size, rows in groups.items():
        p = probs[rows].float() if len(rows) < probs.shape[0] else probs.float()  # (n, 1, h, w)
        if tuple(p.shape[-2:]) != size:
            p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)  # (n, 1, H, W)
        p = p[:, 0].clamp(0.0, 1.0)  # (n, H, W)
        if threshold is None:
            m = (p * 255.0).round().to(torch.uint8)
        else:
            m = (p >= threshold).to(torch.uint8) * 255
        for j, i in enumerate(rows):
            out[i] = m[j]
    return out  # type: ignore[return-value]
