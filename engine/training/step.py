"""One optimizer update: forward and backward over its micro-batches, clip, step, EMA, schedule.

Nothing here waits for the GPU. A non-finite loss or gradient skips the update on the device
(the fused AdamW kernel's ``found_inf`` input; the GradScaler does the same for fp16), the EMA
leaves the skipped step out through a 0/1 weight, and the counts land in
:class:`~engine.training.meters.StepMeters`, read every few steps.

The update itself (forward, loss, backward, clip, optimizer and scaler step) is written once,
in :func:`update_weights`, over a :class:`StepParts`: the trainer reaches it through
:func:`update_on_device`, and the speed benchmark and the lab's loops call it with their own
model, loss and batches, so what they measure is the step that trains.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from engine.distributed import all_reduce_max
from engine.inference.preprocess import DeviceNormalizer
from engine.runtime import autocast_context
from engine.training.graphed_step import CUDAGraphStep
from engine.training.meters import LOSS_TERMS
from engine.training.state import RunState

__all__ = [
    "GraphedTrainStep",
    "LossTerms",
    "StepParts",
    "device_batch",
    "finish_update",
    "forward_loss",
    "model_loss",
    "run_parts",
    "train_step",
    "update_on_device",
    "update_weights",
]

#: A loss of a module's output and the masks: its terms, ``loss`` being the one back-propagated.
LossTerms = Callable[[Any, torch.Tensor], Dict[str, torch.Tensor]]


@dataclass
class StepParts:
    """What one optimizer update touches, without the run around it.

    The trainer builds one from its :class:`RunState` (:func:`run_parts`); the lab's loops and the
    speed benchmark build their own around a bare model and their own batches, so that every one
    of them runs the same update (:func:`update_weights`).

    Attributes:
        model: what the step calls: the model, compiled and/or wrapped for DDP, or any module.
        loss: ``loss(output, masks)`` -> terms (see :func:`model_loss` for the model's loss).
        optimizer: steps ``params`` (a fused one skips a non-finite update on the device).
        scaler: GradScaler (enabled for fp16 only).
        params: the parameters whose gradient norm is clipped.
        device: where the batch goes.
        grad_clip: max gradient norm (0: the norm is computed, nothing clipped).
        amp_dtype: autocast dtype (None: fp32).
        distributed: ``model`` is wrapped for DDP: gradients are all-reduced on the last micro-batch
            only, and every process skips a non-finite update together.
        channels_last: NHWC images (None: on CUDA).
    """

    model: nn.Module
    loss: LossTerms
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    params: Sequence[nn.Parameter]
    device: torch.device
    grad_clip: float = 0.0
    amp_dtype: Optional[torch.dtype] = None
    distributed: bool = False
    channels_last: Optional[bool] = None


def model_loss(loss_fn: nn.Module) -> LossTerms:
    """The structure loss (:class:`~engine.training.losses.CODLoss`) of a CamoXpert output."""

    def loss(out, masks: torch.Tensor) -> Dict[str, torch.Tensor]:
        return loss_fn(out.logits, masks, out.side_logits, out.aux_loss)

    return loss


def run_parts(run: RunState) -> StepParts:
    """The :class:`StepParts` of a training run."""
    rt = run.runtime
    return StepParts(model=run.train_model, loss=model_loss(run.loss_fn), optimizer=run.optimizer,
                     scaler=run.scaler, params=run.trainable_params(), device=rt.device,
                     grad_clip=run.grad_clip, amp_dtype=rt.amp_dtype, distributed=rt.ctx.distributed)


def forward_loss(parts: StepParts, batch: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Any]:
    """Forward one micro-batch.

    Returns:
        The loss terms (``loss`` is back-propagated) and the module's training output.
    """
    images, masks = device_batch(batch, parts.device, parts.channels_last)
    with autocast_context(parts.device, parts.amp_dtype):
        out = parts.model(images)
    return parts.loss(out, masks), out


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
    """The device work of one update: :func:`update_weights`, then the EMA fold and the meters.

    Nothing here reads a device value on the host or changes Python-side counters, so the same
    code runs eagerly and inside a CUDA-graph capture (:class:`GraphedTrainStep`). The EMA's
    weight for this update must already be written (:meth:`ModelEma.prepare`).
    """
    device = run.runtime.device
    n = len(batches)
    terms_sum = torch.zeros(len(LOSS_TERMS), device=device)
    L, E = run.meters.shape
    load_sum = torch.zeros((L, E), device=device)
    aux_sum = torch.zeros(L, device=device)

    def observe(terms: Dict[str, torch.Tensor], out, finite: torch.Tensor) -> None:
        stacked = torch.stack([terms[k].detach().float() for k in LOSS_TERMS])
        terms_sum.add_(torch.where(finite, stacked, torch.zeros_like(stacked)) / n)
        if L:
            load_sum.add_(out.expert_load.detach().float() / n)
            aux_sum.add_(out.layer_aux_loss.detach().float() / n)

    bad = update_weights(run_parts(run), batches, observe)
    if run.ema is not None:
        run.ema.fold(run.model, apply=(~bad).float())
    run.meters.add(terms_sum, bad, load_sum, aux_sum)


def update_weights(parts: StepParts, batches: Sequence[Mapping[str, torch.Tensor]],
                   observe: Optional[Callable[[Dict[str, torch.Tensor], Any, torch.Tensor], None]] = None
                   ) -> torch.Tensor:
    """One optimizer update over ``batches``: forward, loss, backward, clip, optimizer and scaler step.

    The loss of each micro-batch is divided by their number, so the update is their mean. A
    non-finite loss or gradient norm skips the update on the device (the fused optimizer's
    ``found_inf``; the GradScaler decides itself under fp16). Gradients are left in place (the
    caller zeroes them), and nothing waits for the device but an unfused optimizer's skip test.

    Args:
        parts: the model, loss, optimizer and scaler of the update.
        batches: micro-batches, each with ``image`` and ``mask`` (see :func:`device_batch`).
        observe: called with each micro-batch's terms, output and whether its loss is finite
            (device tensors; to sum statistics without a host read).

    Returns:
        A 0-dim bool device tensor: the update was skipped.
    """
    n = len(batches)
    bad = torch.zeros((), dtype=torch.bool, device=parts.device)
    for i, batch in enumerate(batches):
        last = i == n - 1
        sync = contextlib.nullcontext() if (last or not parts.distributed) else parts.model.no_sync()
        with sync:
            terms, out = forward_loss(parts, batch)
            parts.scaler.scale(terms["loss"] / n).backward()
        finite = torch.isfinite(terms["loss"].detach())
        bad |= ~finite
        if observe is not None:
            observe(terms, out, finite)
    return _apply_gradients(parts, bad)


def _apply_gradients(parts: StepParts, bad: torch.Tensor) -> torch.Tensor:
    """Clip, then step the optimizer unless ``bad`` or the gradient norm is non-finite; the new ``bad``."""
    opt, scaler = parts.optimizer, parts.scaler
    if scaler.is_enabled():
        scaler.unscale_(opt)
    clip = parts.grad_clip if parts.grad_clip > 0 else float("inf")  # inf: the norm, nothing clipped
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.params, clip)
    if not scaler.is_enabled():
        # With fp16 the scaler finds inf gradients itself (that is how it sets its scale).
        bad = bad | ~torch.isfinite(grad_norm)
    if parts.distributed:
        flag = bad.float()
        all_reduce_max(flag)  # every rank skips together (asynchronous collective, no host wait)
        bad = flag > 0
    if scaler.is_enabled():
        scaler.step(opt)
    elif opt.defaults.get("fused"):
        opt.found_inf = bad.float()  # the fused kernel leaves weights, moments and step count alone
        opt.step()
        opt.found_inf = None
    elif not bool(bad):  # unfused optimizer: one host sync to decide
        opt.step()
    scaler.update()
    return bad


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


def device_batch(batch: Mapping[str, torch.Tensor], device: torch.device,
                 channels_last: Optional[bool] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch's images (normalised, channels-last on CUDA) and float masks on ``device``.

    Images come as the training loader sends them, ``(B, h, w, 3)`` uint8, and are normalised
    here (inside a captured step when graphs are on); float ``(B, 3, h, w)`` images are taken as
    already normalised.

    Args:
        channels_last: NHWC images (None: on CUDA, where convolutions run faster so).
    """
    images = batch["image"]
    if images.dtype == torch.uint8:
        if device not in _NORMALISERS:
            _NORMALISERS[device] = DeviceNormalizer(device)
        images = _NORMALISERS[device](images)  # (B, h, w, 3) uint8 -> (B, 3, h, w) float32
    else:
        images = images.to(device, non_blocking=True)
    if device.type == "cuda" if channels_last is None else channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["mask"].to(device, non_blocking=True).float()
