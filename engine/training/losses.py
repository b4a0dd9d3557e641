"""Training loss: structure loss (weighted BCE + weighted IoU) with deep supervision, plus MoE balance.

The structure loss is the one of F3Net and SINet-V2: pixels whose mask differs from its local
(31x31) average, i.e. pixels near object boundaries, weigh up to ``1 + edge_weight`` times more,
because camouflaged objects are lost at their boundaries rather than in their interiors.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CODLoss", "boundary_weight", "structure_loss"]


def boundary_weight(mask: torch.Tensor, kernel: int = 31, edge_weight: float = 5.0) -> torch.Tensor:
    """Per-pixel weight ``1 + edge_weight * |avgpool_k(mask) - mask|``.

    Args:
        mask: (B, 1, H, W) ground truth in [0, 1].
        kernel: odd averaging window.
        edge_weight: extra weight at boundaries.

    Returns:
        (B, 1, H, W) weights >= 1.
    """
    # The zero-padded k x k box average (F3Net's avg_pool2d(mask, k, 1, k // 2)) is separable:
    # a (k, 1) pass then a (1, k) pass gives the same numbers with 2k instead of k^2 reads per pixel.
    pad = kernel // 2
    local_mean = F.avg_pool2d(mask, kernel_size=(kernel, 1), stride=1, padding=(pad, 0))
    local_mean = F.avg_pool2d(local_mean, kernel_size=(1, kernel), stride=1, padding=(0, pad))  # (B, 1, H, W)
    return 1.0 + edge_weight * (local_mean - mask).abs()


def structure_loss(
    logits: torch.Tensor,
    mask: torch.Tensor,
    kernel: int = 31,
    edge_weight: float = 5.0,
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Weighted BCE + weighted IoU, averaged over the batch.

    Args:
        logits: (B, 1, H, W) raw predictions.
        mask: (B, 1, H, W) ground truth in [0, 1] at the same size.
        kernel: boundary window of :func:`boundary_weight`.
        edge_weight: boundary emphasis of :func:`boundary_weight`.
        weight: precomputed :func:`boundary_weight` of ``mask`` (shared by deep-supervision
            outputs of the same mask); computed when None.

    Returns:
        Scalar loss (fp32).
    """
    logits = logits.float()  # the loss runs in fp32 even under autocast
    mask = mask.float()
    if weight is None:
        weight = boundary_weight(mask, kernel, edge_weight)
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))  # (B, 1)
    prob = torch.sigmoid(logits)
    inter = (prob * mask * weight).sum(dim=(2, 3))  # (B, 1)
    union = ((prob + mask) * weight).sum(dim=(2, 3))  # (B, 1)
    wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
    return (wbce + wiou).mean()


def _scaled_kernel(kernel: int, scale: float) -> int:
    """The boundary window for a map ``scale`` times the mask's size (odd, at least 3)."""
    return max(3, int(round(kernel * scale)) | 1)


class CODLoss(nn.Module):
    """Total training loss of a :class:`~models.CamoXpertOutput`.

    ``total = main + side_weight * mean(side losses) + aux_weight * aux_loss``

    Side logits smaller than the mask are scored against the mask area-averaged to their size
    (soft boundary values), with the boundary window scaled the same way.

    Args:
        side_weight: weight of the mean structure loss of the deep-supervision outputs.
        aux_weight: weight of the MoE load-balancing loss.
        edge_kernel: structure-loss window.
        edge_weight: structure-loss boundary emphasis.
    """

    def __init__(self, side_weight: float = 1.0, aux_weight: float = 0.01, edge_kernel: int = 31,
                 edge_weight: float = 5.0):
        super().__init__()
        if edge_kernel < 1 or edge_kernel % 2 == 0:
            raise ValueError(f"edge_kernel must be a positive odd number, got {edge_kernel}.")
        self.side_weight = float(side_weight)
        self.aux_weight = float(aux_weight)
        self.edge_kernel = int(edge_kernel)
        self.edge_weight = float(edge_weight)

    def forward(
        self,
        logits: torch.Tensor,
        mask: torch.Tensor,
        side_logits: Sequence[torch.Tensor] = (),
        aux_loss: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Compute the loss terms.

        Returns:
            ``{"loss", "main", "side", "aux"}``; ``loss`` is the one to back-propagate.
        """
        mask = mask.float()
        weight = boundary_weight(mask, self.edge_kernel, self.edge_weight)  # once for all outputs
        main = structure_loss(logits, mask, weight=weight)
        zero = main.new_zeros(())
        targets = {tuple(mask.shape[-2:]): (mask, weight)}  # mask and weight per side size
        side_losses = []
        for s in side_logits:
            size = tuple(s.shape[-2:])
            if size not in targets:
                small = F.adaptive_avg_pool2d(mask, size)  # (B, 1, h, w) area average
                k = _scaled_kernel(self.edge_kernel, size[0] / mask.shape[-2])
                targets[size] = (small, boundary_weight(small, k, self.edge_weight))
            target, w = targets[size]
            side_losses.append(structure_loss(s, target, weight=w))
        side = torch.stack(side_losses).mean() if side_losses else zero
        aux = aux_loss.float() if aux_loss is not None else zero
        total = main + self.side_weight * side + self.aux_weight * aux
        return {"loss": total, "main": main.detach(), "side": side.detach(), "aux": aux.detach()}
