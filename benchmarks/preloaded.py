"""The quality benchmark's training loop: the product's step on data preloaded on the device.

Every variant trains the same way: batches drawn (seeded) from images already decoded onto the
device, horizontal flips only, AdamW at a constant learning rate after a linear warm-up, and
the product's one training step (:func:`engine.training.step.update_weights`), on CUDA replayed
from a captured graph. The loop's clock counts device seconds, so variants are compared at the
same GPU time.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from benchmarks.quality_data import QualityData
from engine.training.graphed_step import (
    CUDAGraphStep,
    capturable_adamw,
    reset_optimizer_state_,
    set_learning_rate,
)
from engine.training.losses import CODLoss
from engine.training.step import StepParts, model_loss, update_weights

__all__ = ["PreloadedStep", "QualitySettings", "TrainRecord", "normalise", "train_preloaded", "use_cuda_graph"]

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass
class QualitySettings:
    """One loss, optimizer and schedule for every variant.

    Attributes:
        seconds: device seconds of training per variant and seed (0: no time limit).
        max_steps: stop at this many steps as well (0: no step limit).
        batch_size: images per step.
        lr: AdamW learning rate (constant after warm-up, so a copy taken at step N equals a run
            stopped at N).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        grad_clip: max gradient norm (0: off).
        dtype: autocast dtype (None: fp32).
        check_every: steps between clock reads (each one synchronises the device).
        eval_batch_size: test images per forward pass.
        untimed_warmup_steps: steps run (then undone) before the clock starts, so kernel
            selection and allocator growth do not count against the first variant.
        channels_last: NHWC memory layout on CUDA (faster convolutions, as ``benchmark`` uses).
        cuda_graphs: on CUDA, capture the whole step (batch gather to optimizer update) once and
            replay it (:mod:`engine.training.graphed_step`), so a step costs its kernels and not
            their launches. Not with fp16, whose loss scaler decides on the host.
    """

    seconds: float = 240.0
    max_steps: int = 0
    batch_size: int = 16
    lr: float = 2.5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    dtype: Optional[torch.dtype] = None
    check_every: int = 10
    eval_batch_size: int = 32
    untimed_warmup_steps: int = 5
    channels_last: bool = True
    cuda_graphs: bool = True

    def to_dict(self) -> Dict[str, Any]:
        """JSON-safe dict."""
        d = asdict(self)
        d["dtype"] = str(self.dtype).replace("torch.", "") if self.dtype is not None else "fp32"
        return d


@dataclass
class TrainRecord:
    """What :func:`train_preloaded` did."""

    steps: int = 0
    seconds: float = 0.0
    snapshot: Optional[Dict[str, torch.Tensor]] = None
    snapshot_step: Optional[int] = None
    final_loss: float = float("nan")
    routing: Dict[str, Dict[str, float]] = field(default_factory=dict)
    cuda_graph: bool = False
    setup_seconds: float = 0.0


_STATS: Dict[torch.device, tuple] = {}


def normalise(images_u8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8 images as ImageNet-normalised float32 (NHWC when ``channels_last``)."""
    x = images_u8.float().div_(255.0)
    # Mean/std live on the device once: a host-to-device copy per step would stall the loop.
    if x.device not in _STATS:
        _STATS[x.device] = (_MEAN.to(x.device), _STD.to(x.device))
    mean, std = _STATS[x.device]
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def use_cuda_graph(settings: QualitySettings, device: torch.device) -> bool:
    """Whether :func:`train_preloaded` replays a captured step (CUDA, graphs on, no fp16 scaler)."""
    return settings.cuda_graphs and device.type == "cuda" and settings.dtype != torch.float16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PreloadedStep:
    """One training step on a batch drawn from preloaded data: gather, flip, the product's update.

    Args:
        model: the model to train in place (on the data's device).
        data: the preloaded splits.
        settings: loop settings.
        loss_fn: the structure loss.
        seed: seeds the sample order and flips.
    """

    def __init__(self, model: torch.nn.Module, data: QualityData, settings: QualitySettings, loss_fn: CODLoss,
                 seed: int):
        self.model, self.data, self.settings, self.seed = model, data, settings, seed
        self.device = data.train_images.device
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        channels_last = settings.channels_last and self.device.type == "cuda"
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.graphed = use_cuda_graph(settings, self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = capturable_adamw(params, settings.lr, settings.weight_decay, self.device)
        scaler = torch.amp.GradScaler(self.device.type, enabled=settings.dtype == torch.float16)
        self.parts = StepParts(model=model, loss=model_loss(loss_fn), optimizer=self.opt, scaler=scaler,
                               params=params, device=self.device, grad_clip=settings.grad_clip,
                               amp_dtype=settings.dtype, channels_last=channels_last)
        self._step: Callable[..., Tuple[torch.Tensor, torch.Tensor]] = self._eager

    def _draw(self) -> Tuple[torch.Tensor, torch.Tensor]:
        n, b = self.data.train_images.shape[0], self.settings.batch_size
        idx = torch.randint(n, (b,), generator=self.gen, device=self.device)
        flip = torch.rand(b, generator=self.gen, device=self.device) < 0.5
        return idx, flip

    def _body(self, idx: torch.Tensor, flip: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # Everything from the batch gather to the optimizer update: the part a graph captures.
        images = self.data.train_images.index_select(0, idx)
        masks = self.data.train_masks.index_select(0, idx)
        f = flip.view(-1, 1, 1, 1)
        images = normalise(torch.where(f, images.flip(-1), images))  # the step lays them out
        masks = torch.where(f, masks.flip(-1), masks).float().div_(255.0)
        seen: Dict[str, torch.Tensor] = {}

        def observe(terms, out, finite):
            seen["loss"], seen["load"] = terms["loss"].detach(), out.expert_load.detach()

        update_weights(self.parts, [{"image": images, "mask": masks}], observe)
        return seen["loss"], seen["load"]

    def _eager(self, idx: torch.Tensor, flip: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        self.opt.zero_grad(set_to_none=True)
        return self._body(idx, flip)

    def prepare(self) -> None:
        """Untimed warm-up steps (and the graph's capture), then back to the initial state.

        They run on a throw-away copy of the state: weights, buffers and optimizer state are
        restored in place, so the graph still points at them, and the sample order restarts.
        """
        if not (self.settings.untimed_warmup_steps or self.graphed):
            return
        state = copy.deepcopy(self.model.state_dict())
        set_learning_rate(self.opt, self.settings.lr * 1e-3)
        if self.graphed:
            warmup = max(3, self.settings.untimed_warmup_steps)
            self._step = CUDAGraphStep(self._body, self.opt, self._draw(), warmup_steps=warmup)
        else:
            for _ in range(self.settings.untimed_warmup_steps):
                self._eager(*self._draw())
        with torch.no_grad():
            self.model.load_state_dict(state)
            reset_optimizer_state_(self.opt)
        self.gen.manual_seed(self.seed)
        _sync(self.device)

    def __call__(self, steps_done: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Step ``steps_done + 1`` (its warm-up learning rate set first); the loss and expert loads."""
        s = self.settings
        if steps_done < s.warmup_steps + 1:
            set_learning_rate(self.opt, s.lr * min(1.0, (steps_done + 1) / max(1, s.warmup_steps)))
        return self._step(*self._draw())


class _RoutingWindow:
    """Expert loads summed per clock interval, to share routing slots over the run's last quarter."""

    def __init__(self):
        self.load_sum: Optional[torch.Tensor] = None
        self.load_steps = 0
        self.chunks: List[tuple] = []  # (steps, load sum) per check interval

    def add(self, load: torch.Tensor) -> None:
        if load.numel():
            # A graph overwrites its outputs on the next replay: the sum is a new tensor.
            self.load_sum = load.clone() if self.load_sum is None else self.load_sum + load
            self.load_steps += 1

    def close_interval(self) -> None:
        if self.load_sum is not None:
            self.chunks.append((self.load_steps, self.load_sum))
            self.load_sum, self.load_steps = None, 0

    def summary(self, model: torch.nn.Module, total_steps: int) -> Dict[str, Dict[str, float]]:
        """Each MoE layer's share of routing slots per expert over the last quarter of the steps."""
        if not self.chunks:
            return {}
        window = max(1, total_steps // 4)
        steps, acc = 0, None
        for k, load in reversed(self.chunks):
            acc = load if acc is None else acc + load
            steps += k
            if steps >= window:
                break
        top_k = float(model.config.top_k)
        shares = (acc / (steps * top_k)).float().cpu()  # (L, E), each row sums to 1
        return {
            layer: {expert: round(float(s), 4) for expert, s in zip(model.expert_names, row)}
            for layer, row in zip(model.moe_layer_names, shares)
        }


def _cpu_copy(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_preloaded(
    model: torch.nn.Module,
    data: QualityData,
    settings: QualitySettings,
    loss_fn: CODLoss,
    seed: int,
    snapshot_at: Optional[int] = None,
    clock: Callable[[], float] = time.perf_counter,
    progress: Optional[Callable[[int, float], None]] = None,
) -> TrainRecord:
    """Train ``model`` in place on ``data`` until the time or step budget is spent.

    Args:
        model: a freshly built model on the data's device.
        data: the preloaded splits.
        settings: loop settings (one for every variant).
        loss_fn: the structure loss (main + deep supervision + MoE balance).
        seed: seeds the sample order and flips.
        snapshot_at: copy the weights (to the CPU) when this step is reached.
        clock: host clock, read after a device sync every ``check_every`` steps.
        progress: called with (steps, device seconds) at each of those clock reads, so that
            showing progress adds no device sync.

    Returns:
        Steps taken, device seconds, the snapshot, the last loss, and each MoE layer's routing
        shares over the run's last quarter.
    """
    device = data.train_images.device
    step = PreloadedStep(model, data, settings, loss_fn, seed)
    model.train()
    record = TrainRecord(cuda_graph=step.graphed)
    t0 = clock()
    step.prepare()
    record.setup_seconds = clock() - t0
    routing, loss, paused = _RoutingWindow(), torch.zeros((), device=device), 0.0
    start = clock()
    while True:
        loss, load = step(record.steps)
        record.steps += 1
        routing.add(load)
        if snapshot_at is not None and record.steps == snapshot_at:
            t = clock()
            record.snapshot, record.snapshot_step = _cpu_copy(model), record.steps
            paused += clock() - t
        at_step_limit = bool(settings.max_steps) and record.steps >= settings.max_steps
        if record.steps % settings.check_every == 0 or at_step_limit:
            _sync(device)
            elapsed = clock() - start - paused
            if progress is not None:
                progress(record.steps, elapsed)
            routing.close_interval()
            if (settings.seconds and elapsed >= settings.seconds) or at_step_limit:
                break
    _sync(device)
    record.seconds = clock() - start - paused
    record.final_loss = float(loss)
    routing.close_interval()
    record.routing = routing.summary(model, record.steps)
    return record
