"""One optimizer update: forward and backward over its micro-batches, clip, step, EMA, schedule.

Nothing here waits for the GPU. A non-finite loss or gradient skips the update on the device
(the fused AdamW kernel's ``found_inf`` input; the GradScaler does the same for fp16), the EMA
leaves the skipped step out through a 0/1 weight, and the counts land in
:class:`~engine.training.meters.StepMeters`, read every few steps.
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from engine.distributed import all_reduce_max
from engine.inference.preprocess import DeviceNormalizer
from engine.runtime import autocast_context
from engine.training.graphed_step import CUDAGraphStep
from engine.training.meters import LOSS_TERMS
from engine.training.state import RunState

__all__ = ["GraphedTrainStep", "device_batch", "finish_update", "forward_loss", "train_step", "update_on_device"]


def forward_loss(model: nn.Module, loss_fn: nn.Module, batch: Mapping[str, torch.Tensor], device: torch.device,
                 amp_dtype) -> Tuple[Dict[str, torch.Tensor], object]:
    """Forward one micro-batch.

    Returns:
        The loss terms (``loss`` is back-propagated) and the model's training output.
    """
    images, masks = device_batch(batch, device)
    with autocast_context(device, amp_dtype):
        out = model(images)
    return loss_fn(out.logits, masks, out.side_logits, out.aux_loss), out


def train_step(run: RunState, batches: List[Mapping[str, torch.Tensor]]) -> None:
    """One optimizer update over ``batches`` (the micro-batches of the update).

    Gradients are all-reduced on the last micro-batch only (``no_sync`` before it) and the loss
    is divided by the number of micro-batches, so the update is the mean over all of them.
    """
    if run.ema is not None:
        run.ema.prepare()
    update_on_device(run, batches)
    run.optimizer.zero_grad(set_to_none=True)
    finish_update(run)


def update_on_device(run: RunState, batches: List[Mapping[str, torch.Tensor]]) -> None:
    """The device work of one update: forward, backward, clip, optimizer, EMA fold, meters.

    Nothing here reads a device value on the host or changes Python-side counters, so the same
    code runs eagerly and inside a CUDA-graph capture (:class:`GraphedTrainStep`). The EMA's
    weight for this update must already be written (:meth:`ModelEma.prepare`).
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
    if run.ema is not None:
        run.ema.fold(run.model, apply=(~bad).float())
    run.meters.add(terms_sum, bad, load_sum, aux_sum)


def finish_update(run: RunState) -> None:
    """The host side of an update: counters and the schedule's rates for the next one."""
    if run.ema is not None:
        run.ema.num_updates += 1
    run.last_lr = run.head_lr()  # the rate this update used
    run.schedule.step()
    run.step += 1


class GraphedTrainStep:
    """Runs updates of one micro-batch from a single CUDA-graph capture of :func:`update_on_device`.

    The first ``eager_steps`` updates (after construction or :meth:`reset`) are ordinary eager
    updates on a side stream: kernel selection, optimizer state and allocator pools settle
    there. The next update is captured (capture records, it does not run) and then replayed,
    and every later one copies its batch into the captured input tensors and replays. Per
    update the host only writes the EMA weight and the learning rates into device tensors and
    launches the graph, so the step costs what its kernels cost on the GPU.

    Args:
        eager_steps: real eager updates before the capture.
    """

    def __init__(self, eager_steps: int = 3):
        self.eager_steps = int(eager_steps)
        self.reset()

    def reset(self) -> None:
        """Forget the capture (the trainable parameters changed): warm up and capture again."""
        self.graph: Optional[CUDAGraphStep] = None
        self.done = 0

    @property
    def captured(self) -> bool:
        """Whether updates are now replayed."""
        return self.graph is not None

    def __call__(self, run: RunState, batch: Mapping[str, torch.Tensor]) -> None:
        """One update on ``batch`` (a single micro-batch)."""
        if self.graph is None and self.done < self.eager_steps:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                train_step(run, [batch])
            torch.cuda.current_stream().wait_stream(side)
            self.done += 1
            return
        if self.graph is None:
            # The graph's inputs are the batch as the loader sends it (uint8 images): the
            # normalisation is part of the captured step.
            device = run.runtime.device
            images = batch["image"].to(device, non_blocking=True)
            masks = batch["mask"].to(device, non_blocking=True)
            run.optimizer.zero_grad(set_to_none=True)

            def body(images: torch.Tensor, masks: torch.Tensor):
                update_on_device(run, [{"image": images, "mask": masks}])
                return ()

            self.graph = CUDAGraphStep(body, run.optimizer, (images, masks), warmup_steps=0)
        if run.ema is not None:
            run.ema.prepare()
        self.graph(batch["image"], batch["mask"])
        finish_update(run)


_NORMALISERS: Dict[torch.device, DeviceNormalizer] = {}


def device_batch(batch: Mapping[str, torch.Tensor], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch's images (normalised, channels-last on CUDA) and float masks on ``device``.

    Images come as the training loader sends them, ``(B, h, w, 3)`` uint8, and are normalised
    here (inside a captured step when graphs are on); float ``(B, 3, h, w)`` images are taken as
    already normalised.
    """
    images = batch["image"]
    if images.dtype == torch.uint8:
        if device not in _NORMALISERS:
            _NORMALISERS[device] = DeviceNormalizer(device)
        images = _NORMALISERS[device](images)  # (B, h, w, 3) uint8 -> (B, 3, h, w) float32
    else:
        images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["mask"].to(device, non_blocking=True).float()
