"""Per-epoch validation on the split held out from the training images (never a test set).

Each rank scores its shard of the validation images; per-image sums (S-measure, MAE, loss) are
all-reduced so every rank ends up with the same means over the whole split.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn

from engine.distributed import all_reduce_sum
from engine.training.losses import structure_loss
from engine.evaluation.metrics import CODMetrics
from engine.runtime import autocast_context

__all__ = ["validate"]


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: Iterable[Dict[str, torch.Tensor]],
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    edge_kernel: int = 31,
    edge_weight: float = 5.0,
) -> Dict[str, float]:
    """Score ``model`` on ``loader`` with S-measure, MAE and the structure loss.

    Args:
        model: the model (or its EMA copy), unwrapped; put in eval mode here.
        loader: batches of ``{"image": (B, 3, H, W), "mask": (B, 1, H, W)}``.
        device: compute device.
        amp_dtype: autocast dtype, None for fp32.
        edge_kernel: structure-loss window.
        edge_weight: structure-loss boundary emphasis.

    Returns:
        ``{"n", "Sm", "MAE", "loss"}`` over all ranks (NaN when the split is empty).
    """
    was_training = model.training
    model.eval()
    metrics = CODMetrics(measures=("Sm", "MAE"))
    loss_sum = 0.0
    autocast = autocast_context(device, amp_dtype)
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True).float()
        with autocast:
            logits = model(images)
        logits = logits.float()
        loss_sum += structure_loss(logits, masks, edge_kernel, edge_weight).item() * images.shape[0]
        probs = torch.sigmoid(logits).cpu()  # (B, 1, H, W)
        for prob, gt in zip(probs, masks.cpu()):
            metrics.update(prob[0], gt[0])
    sums = metrics.partial_sums()
    reduced = torch.tensor([sums["n"], sums["Sm"], sums["MAE"], loss_sum], dtype=torch.float64)
    if device.type == "cuda":
        reduced = reduced.to(device)  # NCCL reduces GPU tensors only
    all_reduce_sum(reduced)
    n, sm, mae, loss = reduced.tolist()
    model.train(was_training)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "Sm": nan, "MAE": nan, "loss": nan}
    return {"n": int(n), "Sm": sm / n, "MAE": mae / n, "loss": loss / n}
