"""Learning-quality benchmark: model variants trained from scratch for the same GPU seconds.

A detector is judged by the masks it learns to draw, so every change to the model is measured
here by quality per GPU second, side by side with a reference in the same run. Each variant is
built through the normal model config (the run config's ``model`` section plus the variant's
overrides), trained by one bare loop (data preloaded on the device, horizontal flips only, the
project's structure loss, AdamW at a constant learning rate after a linear warm-up), then scored
on the test split with PySODMetrics at ground-truth size.

Two comparisons per seed:

* **equal time**: every variant trains for ``seconds`` of measured device time;
* **equal steps**: every variant is also scored at the number of steps the *first* variant
  reached in its time budget, or at ``equal_steps`` when given (its weights are copied when it
  passes that step; with a constant learning rate this equals a run stopped there). List the
  slowest variant first.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm

from engine.evaluation.metrics import CODMetrics
from engine.inference.postprocess import resize_prediction
from engine.runtime import autocast_context
from engine.tools.quality_data import QualityData
from engine.tools.quality_report import QUALITY_MEASURES, VARIANT_NAMES, format_quality_table, with_summary
from engine.training.graphed_step import (
    CUDAGraphStep,
    capturable_adamw,
    reset_optimizer_state_,
    set_learning_rate,
)
from engine.training.losses import CODLoss
from engine.training.rng import seed_everything
from models import CamoXpertConfig, build_model, count_parameters

__all__ = [
    "QUALITY_MEASURES",
    "VARIANTS",
    "QualitySettings",
    "format_quality_table",
    "run_quality_benchmark",
    "score_model",
    "train_bare",
    "use_cuda_graph",
    "variant_config",
]

_ALL_EXPERTS = list(CamoXpertConfig().experts)

#: Model-config overrides of each variant, applied over the run config's ``model`` section.
VARIANTS: Dict[str, Dict[str, Any]] = {
    # The model as configured (configs/default.yaml, --config, --set).
    "camoxpert": {},
    # Plain FPN on the same backbone: 1x1 laterals, top-down sum, 3x3 conv head; no MoE.
    "fpn": {"num_experts": 0, "decoder": "fpn", "deep_supervision": False},
    # The six other experts, no attention expert.
    "no-attention": {"experts": [e for e in _ALL_EXPERTS if e != "attention"], "num_experts": 6},
    # The refinement decoder and deep supervision without any expert.
    "no-moe": {"num_experts": 0},
    # One routing choice per image instead of per token.
    "image-routing": {"routing": "image"},
    # Without the deep-supervision side outputs.
    "no-deep-supervision": {"deep_supervision": False},
    # The experts on the plain FPN decoder (top-down sums, no refining convs).
    "fpn-moe": {"decoder": "fpn"},
}
# `quality-benchmark --help` lists VARIANT_NAMES, which it reads without importing torch: a variant
# added to one table only fails here, at import, instead of going missing from the help or the CLI.
if tuple(VARIANTS) != VARIANT_NAMES:
    raise RuntimeError(f"VARIANTS {list(VARIANTS)} and quality_report.VARIANT_NAMES {list(VARIANT_NAMES)} differ.")

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
    """What :func:`train_bare` did."""

    steps: int = 0
    seconds: float = 0.0
    snapshot: Optional[Dict[str, torch.Tensor]] = None
    snapshot_step: Optional[int] = None
    final_loss: float = float("nan")
    routing: Dict[str, Dict[str, float]] = field(default_factory=dict)
    cuda_graph: bool = False
    setup_seconds: float = 0.0


def variant_config(model_section: Mapping[str, Any], name: str) -> CamoXpertConfig:
    """The model config of variant ``name``: the run's ``model`` section plus its overrides.

    Raises:
        ValueError: unknown variant (the message lists the valid ones).
    """
    if name not in VARIANTS:
        raise ValueError(f"Unknown variant {name!r}. Valid variants: {', '.join(VARIANTS)}.")
    return CamoXpertConfig.from_dict({**dict(model_section), **VARIANTS[name]})


_STATS: Dict[torch.device, tuple] = {}


def _normalise(images_u8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    x = images_u8.float().div_(255.0)
    # Mean/std live on the device once: a host-to-device copy per step would stall the loop.
    if x.device not in _STATS:
        _STATS[x.device] = (_MEAN.to(x.device), _STD.to(x.device))
    mean, std = _STATS[x.device]
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _batch(data: QualityData, idx: torch.Tensor, flip: torch.Tensor, channels_last: bool = False):
    """Images (normalised) and masks (0-1) of ``idx``, horizontally flipped where ``flip``."""
    images = data.train_images.index_select(0, idx)
    masks = data.train_masks.index_select(0, idx)
    f = flip.view(-1, 1, 1, 1)
    images = torch.where(f, images.flip(-1), images)
    masks = torch.where(f, masks.flip(-1), masks)
    return _normalise(images, channels_last), masks.float().div_(255.0)


def use_cuda_graph(settings: QualitySettings, device: torch.device) -> bool:
    """Whether :func:`train_bare` replays a captured step (CUDA, graphs on, no fp16 scaler)."""
    return settings.cuda_graphs and device.type == "cuda" and settings.dtype != torch.float16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_bare(
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
    n = data.train_images.shape[0]
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler(device.type, enabled=settings.dtype == torch.float16)
    gen = torch.Generator(device=device).manual_seed(seed)
    channels_last = settings.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    graphed = use_cuda_graph(settings, device)
    opt = capturable_adamw(params, settings.lr, settings.weight_decay, device)

    def body(idx: torch.Tensor, flip: torch.Tensor):
        # Everything from the batch gather to the optimizer update: the part a graph captures.
        images, masks = _batch(data, idx, flip, channels_last)
        with autocast_context(device, settings.dtype):
            out = model(images)
            loss = loss_fn(out.logits, masks, out.side_logits, out.aux_loss)["loss"]
        scaler.scale(loss).backward()
        if settings.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip, foreach=True)
        scaler.step(opt)
        scaler.update()
        return loss.detach(), out.expert_load.detach()

    def draw():
        idx = torch.randint(n, (settings.batch_size,), generator=gen, device=device)
        flip = torch.rand(settings.batch_size, generator=gen, device=device) < 0.5
        return idx, flip

    def eager_step(idx, flip):
        opt.zero_grad(set_to_none=True)
        return body(idx, flip)

    model.train()
    record = TrainRecord(cuda_graph=graphed)
    t0 = clock()
    if settings.untimed_warmup_steps or graphed:
        # Warm the kernels up (and capture the graph) on a throw-away copy of the state, then
        # start from the same init: weights, buffers and optimizer state are restored in place,
        # so the graph still points at them.
        state = copy.deepcopy(model.state_dict())
        set_learning_rate(opt, settings.lr * 1e-3)
        if graphed:
            step = CUDAGraphStep(body, opt, draw(), warmup_steps=max(3, settings.untimed_warmup_steps))
        else:
            step = eager_step
            for _ in range(settings.untimed_warmup_steps):
                step(*draw())
        with torch.no_grad():
            model.load_state_dict(state)
            reset_optimizer_state_(opt)
        gen.manual_seed(seed)
        _sync(device)
    else:
        step = eager_step
    record.setup_seconds = clock() - t0

    load_sum: Optional[torch.Tensor] = None
    load_steps = 0
    chunks: List[tuple] = []  # (steps, load sum) per check interval, for the routing window
    loss = torch.zeros((), device=device)
    paused = 0.0
    start = clock()
    while True:
        if record.steps < settings.warmup_steps + 1:
            set_learning_rate(opt, settings.lr * min(1.0, (record.steps + 1) / max(1, settings.warmup_steps)))
        loss, load = step(*draw())
        record.steps += 1
        if load.numel():
            # A graph overwrites its outputs on the next replay: the sum is a new tensor.
            load_sum = load.clone() if load_sum is None else load_sum + load
            load_steps += 1
        if snapshot_at is not None and record.steps == snapshot_at:
            t = clock()
            record.snapshot = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            record.snapshot_step = record.steps
            paused += clock() - t
        if record.steps % settings.check_every == 0 or settings.max_steps and record.steps >= settings.max_steps:
            _sync(device)
            elapsed = clock() - start - paused
            if progress is not None:
                progress(record.steps, elapsed)
            if load_sum is not None:
                chunks.append((load_steps, load_sum))
                load_sum, load_steps = None, 0
            if (settings.seconds and elapsed >= settings.seconds) or (
                settings.max_steps and record.steps >= settings.max_steps
            ):
                break
    _sync(device)
    record.seconds = clock() - start - paused
    record.final_loss = float(loss)
    if load_sum is not None:
        chunks.append((load_steps, load_sum))
    record.routing = _routing_summary(model, chunks, record.steps)
    return record


def _routing_summary(model: torch.nn.Module, chunks: Sequence[tuple], total_steps: int) -> Dict[str, Dict[str, float]]:
    """Each MoE layer's share of routing slots per expert over the last quarter of the steps."""
    if not chunks:
        return {}
    window = max(1, total_steps // 4)
    steps, acc = 0, None
    for k, load in reversed(chunks):
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


@torch.no_grad()
def score_model(model: torch.nn.Module, data: QualityData, settings: QualitySettings) -> Dict[str, float]:
    """S-measure, mean E-measure, weighted F and MAE of ``model`` on the test split.

    Probabilities are resized to each mask's own size and quantised to uint8, as evaluation
    toolkits do, then scored by PySODMetrics.
    """
    device = data.test_images.device
    model.eval()
    metrics = CODMetrics(measures=("Sm", "Em", "wFm", "MAE"))
    for start in range(0, data.test_images.shape[0], settings.eval_batch_size):
        channels_last = settings.channels_last and device.type == "cuda"
        images = _normalise(data.test_images[start : start + settings.eval_batch_size], channels_last)
        with autocast_context(device, settings.dtype):
            probs = model(images).float().sigmoid()[:, 0].cpu()  # (b, S, S)
        for i, prob in enumerate(probs):
            gt = data.test_gts[start + i]
            metrics.update(resize_prediction(prob, gt.shape[:2]), gt)
    result = metrics.compute()
    model.train()
    return {k: float(result[k]) for k in QUALITY_MEASURES}


@contextmanager
def _run_progress(settings: QualitySettings, desc: str) -> Iterator[Callable[[int, float], None]]:
    """A tqdm bar over one run's budget, as :func:`train_bare`'s ``progress`` callback: device
    seconds against ``settings.seconds``, or steps against ``settings.max_steps`` without a time
    limit. It moves only at the loop's clock reads; tqdm itself honours ``TQDM_DISABLE``."""
    by_time = settings.seconds > 0
    # tqdm's own rate column would read "s/s" for a bar of seconds: show the steps taken instead.
    style = {"bar_format": "{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}"} if by_time else {"unit": "step"}
    bar = tqdm(total=settings.seconds if by_time else settings.max_steps, desc=desc, leave=False,
               mininterval=1.0, dynamic_ncols=True, **style)

    def show(steps: int, seconds: float) -> None:
        if by_time:
            bar.set_postfix_str(f"{steps} steps", refresh=False)
        bar.update(min(seconds if by_time else steps, bar.total) - bar.n)

    try:
        yield show
    finally:
        bar.close()


def run_quality_benchmark(
    data: QualityData,
    model_section: Mapping[str, Any],
    variants: Sequence[str],
    seeds: Sequence[int],
    settings: QualitySettings,
    loss_section: Optional[Mapping[str, Any]] = None,
    log: Callable[[str], None] = print,
    equal_steps: Optional[int] = None,
    reference: str = "fpn",
) -> Dict[str, Any]:
    """Train and score every variant for every seed; the first variant sets the equal-steps point.

    Args:
        data: the preloaded splits (see :func:`engine.tools.quality_data.load_quality_data`).
        model_section: the run config's ``model`` section (backbone, width...).
        variants: names from :data:`VARIANTS`, slowest first.
        seeds: one full round of variants per seed.
        settings: the shared loop settings.
        loss_section: the run config's ``loss`` section (structure-loss and balance weights).
        log: where the line of each finished run goes (a tqdm bar shows each run while it trains).
        equal_steps: the step count every variant is also scored at (default: the first
            variant's steps in each seed), e.g. to compare with a variant run in another call.
        reference: the variant every other is compared with, seed by seed (see
            :mod:`engine.tools.quality_report`).

    Returns:
        A JSON-safe dict: settings, per-run records, per-variant means and spread over seeds, and
        the seeds each variant won against ``reference``.
    """
    configs = {name: variant_config(model_section, name) for name in variants}  # fail early
    loss_kwargs = {k: v for k, v in dict(loss_section or {}).items()
                   if k in ("side_weight", "aux_weight", "edge_kernel", "edge_weight")}
    device = data.train_images.device
    runs: List[Dict[str, Any]] = []
    for seed in seeds:
        target = equal_steps
        for name in variants:
            seed_everything(seed)
            model = build_model(configs[name]).to(device)
            loss_fn = CODLoss(**loss_kwargs)
            with _run_progress(settings, f"seed {seed} {name}") as progress:
                record = train_bare(model, data, settings, loss_fn, seed, snapshot_at=target, progress=progress)
            if target is None:
                target = record.steps
            final = score_model(model, data, settings)
            at_steps = None
            if record.steps == target:
                at_steps = final
            elif record.snapshot is not None:
                model.load_state_dict(record.snapshot)
                at_steps = score_model(model, data, settings)
            run = {
                "variant": name,
                "seed": seed,
                "params_m": round(count_parameters(model) / 1e6, 3),
                "moe_params_m": round(sum(p.numel() for p in model.moe.parameters()) / 1e6, 3),
                "steps": record.steps,
                "train_seconds": round(record.seconds, 2),
                "img_per_s": round(record.steps * settings.batch_size / max(record.seconds, 1e-9), 1),
                "cuda_graph": record.cuda_graph,
                "setup_seconds": round(record.setup_seconds, 2),
                "final_loss": round(record.final_loss, 4),
                "equal_time": final,
                "equal_steps": at_steps,
                "equal_steps_at": target,
                "routing": record.routing,
                "min_routing_share": min((s for layer in record.routing.values() for s in layer.values()), default=None),
            }
            runs.append(run)
            log(
                f"seed {seed} {name:<20} {run['steps']:>6} steps {run['img_per_s']:>7.1f} img/s  "
                f"S {final['Sm']:.4f}  E {final['Em_mean']:.4f}  wF {final['wFm']:.4f}  MAE {final['MAE']:.4f}"
                + (f"  | at {target} steps S {at_steps['Sm']:.4f}" if at_steps else "")
            )
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result = {
        "data": data.name,
        "train_images": int(data.train_images.shape[0]),
        "test_images": int(data.test_images.shape[0]),
        "img_size": int(data.train_images.shape[-1]),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "model": dict(model_section),
        "settings": settings.to_dict(),
        "variants": list(variants),
        "seeds": list(seeds),
        "runs": runs,
    }
    return with_summary(result, reference)
