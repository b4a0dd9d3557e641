"""One optimizer update: forward and backward over its micro-batches, clip, step, EMA, schedule.

Nothing here waits for the GPU. A non-finite loss or gradient skips the update on the device
(the fused AdamW kernel's ``found_inf`` input; the GradScaler does the same for fp16), the EMA
leaves the skipped step out through a 0/1 weight, and the counts land in
:class:`~engine.training.meters.StepMeters`, read every few steps.
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Mapping, Tuple

import torch
import torch.nn as nn

from engine.distributed import all_reduce_max
from engine.runtime import autocast_context
from engine.training.meters import LOSS_TERMS
from engine.training.state import RunState

__all__ = ["forward_loss", "train_step"]


def forward_loss(model: nn.Module, loss_fn: nn.Module, batch: Mapping[str, torch.Tensor], device: torch.device,
                 amp_dtype) -> Tuple[Dict[str, torch.Tensor], object]:
    """Forward one micro-batch.

    Returns:
        The loss terms (``loss`` is back-propagated) and the model's training output.
    """
    images = batch["image"].to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    masks = batch["mask"].to(device, non_blocking=True).float()
    with autocast_context(device, amp_dtype):
        out = model(images)
    return loss_fn(out.logits, masks, out.side_logits, out.aux_loss), out


def train_step(run: RunState, batches: List[Mapping[str, torch.Tensor]]) -> None:
    """One optimizer update over ``batches`` (the micro-batches of the update).

    Gradients are all-reduced on the last micro-batch only (``no_sync`` before it) and the loss
    is divided by the number of micro-batches, so the update is the mean over all of them.
    """
    rt = run.runtime
    n = len(batches)
    device = rt.device
    bad = torch.zeros((), dtype=torch.bool, device=device)
    terms_sum = torch.zeros(len(LOSS_TERMS), device=device)
    L, E = run.meters.shape
    load_sum = torch.zeros((L, E), device=device)
    aux_sum = torch.zeros(L, device=device)
    for i, batch in enumerate(batches):
        last = i == n - 1
        sync = contextlib.nullcontext() if (last or not rt.ctx.distributed) else run.train_model.no_sync()
        with sync:
            terms, out = forward_loss(run.train_model, run.loss_fn, batch, device, rt.amp_dtype)
            run.scaler.scale(terms["loss"] / n).backward()
        finite = torch.isfinite(terms["loss"].detach())
        bad |= ~finite
        stacked = torch.stack([terms[k].detach().float() for k in LOSS_TERMS])
        terms_sum += torch.where(finite, stacked, torch.zeros_like(stacked)) / n
        if L:
            load_sum += out.expert_load.detach().float() / n
            aux_sum += out.layer_aux_loss.detach().float() / n
    opt = run.optimizer
    if run.scaler.is_enabled():
        run.scaler.unscale_(opt)
    params = run.trainable_params()
    clip = run.grad_clip if run.grad_clip > 0 else float("inf")  # inf: the norm, nothing clipped
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
    if not run.scaler.is_enabled():
        # With fp16 the scaler finds inf gradients itself (that is how it sets its scale).
        bad |= ~torch.isfinite(grad_norm)
    if rt.ctx.distributed:
        flag = bad.float()
        all_reduce_max(flag)  # every rank skips together (asynchronous collective, no host wait)
        bad = flag > 0
    if run.scaler.is_enabled():
        run.scaler.step(opt)
    elif opt.defaults.get("fused"):
        opt.found_inf = bad.float()  # the fused kernel leaves weights, moments and step count alone
        opt.step()
        opt.found_inf = None
    elif not bool(bad):  # unfused optimizer: one host sync to decide
        opt.step()
    run.scaler.update()
    opt.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.model, apply=(~bad).float())
    run.last_lr = run.head_lr()  # the rate this update used
    run.schedule.step()
    run.step += 1
    run.meters.add(terms_sum, bad, load_sum, aux_sum)
