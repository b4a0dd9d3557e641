"""Validation during training on the split held out from the training images (never a test set).

Each rank scores its shard of the validation images. S-measure and MAE are computed on the
device, batched, with PySODMetrics' arithmetic (:mod:`engine.evaluation.device_metrics`), and
summed there with the loss, so a validation waits for the GPU once, at its end; the sums are
all-reduced so every rank ends up with the same means over the whole split. The full metric set
(E-measure, weighted F, F-measure) is ``evaluate``'s job.

:class:`ValidationBatches` keeps the decoded split on the device after its first pass (when it
fits ``eval.device_cache_mb``), so later validations neither decode images nor copy them.
"""
from __future__ import annotations

from typing import Callable, ContextManager, Dict, Iterable, Iterator, List, Optional

import torch
import torch.nn as nn

from engine.distributed import all_reduce_sum
from engine.evaluation.device_metrics import batch_sm_mae, quantize_gt
from engine.runtime import autocast_context
from engine.training.losses import structure_loss

__all__ = ["ValidationBatches", "validate", "validation_examples"]


class ValidationBatches:
    """Validation batches as ``{"image", "mask_u8"}`` on the device, cached after the first pass.

    Masks are kept as their 8-bit values (what the metrics score; the loss reads ``/ 255``).
    On CUDA with mixed precision, images are kept in float16 (the autocast model reads them in
    bf16/fp16 anyway); the first pass hands out the same stored tensors, so every validation of
    the run sees identical inputs.

    Args:
        loader: the validation DataLoader (``image`` (B, 3, H, W), ``mask`` (B, 1, H, W) in [0, 1]).
        device: compute device.
        max_bytes: device memory the cache may take (0: never cache, decode every pass).
        half: store images in float16.
        on_cached: called once the whole split is cached (e.g. to stop the loader's workers).
    """

    def __init__(self, loader: Iterable[Dict[str, torch.Tensor]], device: torch.device, max_bytes: int = 0,
                 half: bool = False, on_cached=None):
        self.loader = loader
        self.device = device
        self.max_bytes = int(max_bytes)
        self.dtype = torch.float16 if half else None
        self.on_cached = on_cached
        self.cached: Optional[List[Dict[str, torch.Tensor]]] = None

    @property
    def nbytes(self) -> int:
        """Device bytes the cache holds (0 before it is complete)."""
        if self.cached is None:
            return 0
        return sum(t.numel() * t.element_size() for b in self.cached for t in b.values())

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        if self.cached is not None:
            yield from self.cached
            return
        keep: Optional[List[Dict[str, torch.Tensor]]] = [] if self.max_bytes > 0 else None
        size = 0
        for batch in self.loader:
            images = batch["image"].to(self.device, non_blocking=True)
            if self.dtype is not None:
                images = images.to(self.dtype)
            item = {"image": images, "mask_u8": quantize_gt(batch["mask"].to(self.device, non_blocking=True))}
            if keep is not None:
                size += sum(t.numel() * t.element_size() for t in item.values())
                keep = keep + [item] if size <= self.max_bytes else None
            yield item
        if keep is not None:
            self.cached = keep
            if self.on_cached is not None:
                self.on_cached()


def _score_batch(model: nn.Module, batch: Dict[str, torch.Tensor], device: torch.device,
                 autocast: ContextManager, edge_kernel: int, edge_weight: float) -> torch.Tensor:
    """One batch's ``(n, Sm sum, MAE sum, loss sum, nonfinite)``, float64 on ``device`` (no host sync)."""
    images = batch["image"].to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    if "mask_u8" in batch:
        gt_u8 = batch["mask_u8"].to(device, non_blocking=True)
    else:
        gt_u8 = quantize_gt(batch["mask"].to(device, non_blocking=True))
    with autocast:
        logits = model(images)
    logits = logits.float()
    bad = (~torch.isfinite(logits)).flatten(1).any(dim=1).sum()
    logits = torch.nan_to_num(logits, nan=0.0, posinf=30.0, neginf=-30.0)
    masks = gt_u8.float() / 255.0
    loss = structure_loss(logits, masks, edge_kernel, edge_weight).double() * images.shape[0]
    sm, mae = batch_sm_mae(torch.sigmoid(logits), gt_u8)
    return torch.stack([torch.tensor(float(images.shape[0]), dtype=torch.float64, device=device),
                        sm.sum(), mae.sum(), loss, bad.double()])


@torch.no_grad()
def validate(
    model: nn.Module,
    batches: Iterable[Dict[str, torch.Tensor]],
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    edge_kernel: int = 31,
    edge_weight: float = 5.0,
    stop: Optional[Callable[[], bool]] = None,
) -> Optional[Dict[str, float]]:
    """Score ``model`` with S-measure, MAE and the structure loss, without a host sync per batch.

    Args:
        model: the model (or its EMA copy), unwrapped; put in eval mode here.
        batches: :class:`ValidationBatches`, or batches of ``{"image": (B, 3, H, W)}`` with
            ``"mask_u8"`` (8-bit values) or ``"mask"`` (floats in [0, 1]), each (B, 1, H, W).
        device: compute device.
        amp_dtype: autocast dtype, None for fp32.
        edge_kernel: structure-loss window.
        edge_weight: structure-loss boundary emphasis.
        stop: checked before every batch; when it returns True the pass ends at once and
            returns None (a stop signal during the final validation; single process only, as
            every rank must reach the all-reduce).

    Returns:
        ``{"n", "Sm", "MAE", "loss", "nonfinite"}`` over all ranks (NaN when the split is
        empty). Images whose prediction holds NaN/inf (a diverging model) are scored with those
        values replaced (NaN by 0.5 probability, inf by a saturated logit) and counted in
        ``nonfinite``, so validation never crashes on them.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # n, Sm, MAE, loss, nonfinite
    autocast = autocast_context(device, amp_dtype)
    for batch in batches:
        if stop is not None and stop():
            model.train(was_training)
            return None
        sums += _score_batch(model, batch, device, autocast, edge_kernel, edge_weight)
    all_reduce_sum(sums)  # NCCL reduces GPU tensors only: the sums live on the device
    n, sm, mae, loss, bad = sums.tolist()  # the one host sync of a validation
    model.train(was_training)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "Sm": nan, "MAE": nan, "loss": nan, "nonfinite": 0}
    return {"n": int(n), "Sm": sm / n, "MAE": mae / n, "loss": loss / n, "nonfinite": int(bad)}


@torch.no_grad()
def validation_examples(model: nn.Module, batches: Iterable[Dict[str, torch.Tensor]], device: torch.device,
                        amp_dtype: Optional[torch.dtype] = None, count: int = 4) -> Optional[Dict[str, torch.Tensor]]:
    """The first ``count`` validation images with their masks and the model's predictions, on the CPU.

    For TensorBoard's image tab: the same images at every validation, so the predictions can be
    compared across steps. Returns None for an empty split.

    Returns:
        ``{"image": (k, 3, H, W) normalised, "mask": (k, 1, H, W) in [0, 1], "pred": (k, 1, H, W)
        probabilities}``.
    """
    batch = next(iter(batches), None)
    if batch is None:
        return None
    images = batch["image"][:count].to(device).float()
    masks = batch["mask_u8"][:count].float() / 255.0 if "mask_u8" in batch else batch["mask"][:count].float()
    was_training = model.training
    model.eval()
    with autocast_context(device, amp_dtype):
        pred = torch.sigmoid(model(images).float())
    model.train(was_training)
    return {"image": images.cpu(), "mask": masks.cpu(), "pred": pred.cpu()}
