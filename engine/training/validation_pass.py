"""Per-epoch validation on the split held out from the training images (never a test set).

Each rank scores its shard of the validation images; per-image sums (S-measure, MAE, loss) are
all-reduced so every rank ends up with the same means over the whole split.
"""
from __future__ import annotations

from concurrent.futures import Executor
from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn

from engine.distributed import all_reduce_sum
from engine.training.losses import structure_loss
from engine.evaluation.metrics import CODMetrics, score_image, to_uint8_gt, to_uint8_pred
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
    pool: Optional[Executor] = None,
) -> Dict[str, float]:
    """Score ``model`` on ``loader`` with S-measure, MAE and the structure loss.

    Args:
        model: the model (or its EMA copy), unwrapped; put in eval mode here.
        loader: batches of ``{"image": (B, 3, H, W), "mask": (B, 1, H, W)}``.
        device: compute device.
        amp_dtype: autocast dtype, None for fp32.
        edge_kernel: structure-loss window.
        edge_weight: structure-loss boundary emphasis.
        pool: worker processes that score images (PySODMetrics runs on the CPU, ~10 ms an image
            at 384 px, far more than the forward pass); None scores in this process.

    Returns:
        ``{"n", "Sm", "MAE", "loss", "nonfinite"}`` over all ranks (NaN when the split is
        empty). Images whose prediction holds NaN/inf (a diverging model) are scored with those
        values replaced (NaN by 0.5 probability, inf by a saturated logit) and counted in
        ``nonfinite``, so validation never crashes on them.
    """
    was_training = model.training
    model.eval()
    metrics = CODMetrics(measures=("Sm", "MAE"))
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    nonfinite = torch.zeros((), dtype=torch.float64, device=device)
    autocast = autocast_context(device, amp_dtype)
    pending = []
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True).float()
        with autocast:
            logits = model(images)
        logits = logits.float()
        nonfinite += (~torch.isfinite(logits)).flatten(1).any(dim=1).sum()
        logits = torch.nan_to_num(logits, nan=0.0, posinf=30.0, neginf=-30.0)
        loss_sum += structure_loss(logits, masks, edge_kernel, edge_weight).double() * images.shape[0]
        probs = torch.sigmoid(logits).cpu()  # (B, 1, H, W)
        for prob, gt in zip(probs, masks.cpu()):
            if pool is None:
                metrics.update(prob[0], gt[0])
            else:
                pending.append(pool.submit(score_image, to_uint8_pred(prob[0]), to_uint8_gt(gt[0]), metrics.measures))
    for future in pending:
        metrics.add(future.result())
    sums = metrics.partial_sums()
    reduced = torch.tensor([sums["n"], sums["Sm"], sums["MAE"], 0.0, 0.0], dtype=torch.float64, device=device)
    reduced[3:] = torch.stack([loss_sum, nonfinite])  # NCCL reduces GPU tensors only: all on the device
    all_reduce_sum(reduced)
    n, sm, mae, loss, bad = reduced.tolist()
    model.train(was_training)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "Sm": nan, "MAE": nan, "loss": nan, "nonfinite": 0}
    return {"n": int(n), "Sm": sm / n, "MAE": mae / n, "loss": loss / n, "nonfinite": int(bad)}
