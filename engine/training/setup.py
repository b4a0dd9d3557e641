"""Building a run: runtime (device, processes, precision), data, model and optimizer state.

Everything a :class:`~engine.training.state.RunState` holds is created here, up front.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import Dataset

from engine.compile import compile_model
from engine.config import ConfigError
from engine.distributed import barrier, init_distributed
from engine.runtime import autocast_dtype, resolve_device
from engine.settings import ModelSettings, RunConfig, TrainSettings
from engine.training.budget import TimeBudget
from engine.training.ema import ModelEma
from engine.training.loaders import LoaderSettings, RunLoaders, auto_num_workers, build_loaders, usable_cpus
from engine.training.losses import CODLoss
from engine.training.meters import StepMeters
from engine.training.rng import seed_everything
from engine.training.schedule import TwoStageSchedule, build_optimizer
from engine.training.state import Runtime, RunState
from engine.training.step import GraphedTrainStep
from engine.training.timing import WallClock
from models import build_model, count_parameters

__all__ = ["COMPILE_MIN_BUDGET_S", "COMPILE_MIN_STEPS", "RunData", "build_data", "build_run_state", "eager_model",
           "keep_compile_for_run_length", "resolve_compile", "resolve_cuda_graphs", "set_stage",
           "setup_runtime"]


#: ``train.compile: auto`` compiles only runs at least this long (time budget, in seconds) ...
COMPILE_MIN_BUDGET_S = 3600.0
#: ... or, without a budget, with at least this many planned optimizer steps. Measured in
#: ``train`` on an H100 (2026-11-24, edgenext_small, 384 px, batch 16, bf16, both replayed from
#: CUDA graphs): a compiled update took 11 ms against 19 ms eager, and compiling took 139 s in a
#: fresh process (34 s with a warm inductor cache), so a run needs ~17,000 updates to win it back;
#: slower host CPUs compile for longer, hence the margin.
COMPILE_MIN_STEPS = 50_000


def resolve_compile(value: Any, device: torch.device) -> bool:
    """``train.compile``: ``auto``/null compiles on CUDA devices only (then only long runs, see
    :func:`keep_compile_for_run_length`); true/false force it.

    Raises:
        ConfigError: any other value.
    """
    if value is None or value == "auto":
        return device.type == "cuda"
    if isinstance(value, bool):
        return value
    raise ConfigError(f"train.compile must be auto, true or false, got {value!r}.")


def resolve_cuda_graphs(value: Any, rt: Runtime, accumulation: int) -> Tuple[bool, str]:
    """``train.cuda_graphs``: whether updates are replayed from one CUDA-graph capture, and why not.

    ``auto`` (and null, the default) and true use graphs where they are exact and possible: one
    CUDA process, no fp16 loss scaler (it decides on the host), no gradient accumulation; true
    says so when one of these rules them out. false never uses them. A compiled step is captured
    too (Inductor's default mode launches its kernels from Python, which graphs remove).
    Measured in ``train`` on an H100 (2026-11-24, edgenext_small, 384 px, batch 16, bf16): 20 ms
    a replayed update against 60-75 ms eager.
    """
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        wanted = True
    elif isinstance(value, bool):
        wanted = value
    else:
        raise ConfigError(f"train.cuda_graphs must be auto, true, false or null, got {value!r}.")
    if not wanted:
        return False, "off (train.cuda_graphs: false)"
    reasons = []
    if rt.device.type != "cuda":
        reasons.append("not a CUDA device")
    if rt.ctx.distributed:
        reasons.append("several processes")
    if rt.amp_dtype == torch.float16:
        reasons.append("fp16 loss scaling decides on the host")
    if accumulation > 1:
        reasons.append("gradient accumulation")
    if reasons:
        return False, "off (" + ", ".join(reasons) + ")"
    return True, "on"


def keep_compile_for_run_length(value: Any, budget_s: Optional[float], planned_steps: int) -> bool:
    """Whether ``auto`` compilation pays for itself in a run of this length (forced values always do)."""
    if value not in (None, "auto"):
        return True
    if budget_s is not None:
        return budget_s >= COMPILE_MIN_BUDGET_S
    return planned_steps >= COMPILE_MIN_STEPS


def setup_runtime(tcfg: TrainSettings) -> Runtime:
    """Pick the device, join torchrun's process group, choose precision, seed.

    Raises:
        ConfigError: an unusable device or precision.
    """
    try:
        device = resolve_device(tcfg.device)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(str(exc)) from exc
    ctx = init_distributed(device)
    amp_dtype = autocast_dtype(ctx.device, tcfg.precision)
    if amp_dtype is not None and ctx.device.type != "cuda":
        raise ConfigError(f"train.precision={tcfg.precision} needs a CUDA device; use fp32 or auto on CPU.")
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (loss, router) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        # No cuDNN autotuning: on an H100 (2026-11-24) it doubled the first update (21 s against
        # 10 s) and gave no faster step (graphed 19.6 ms either way; eager 77 against 71 ms).
        torch.backends.cudnn.benchmark = False
    seed_everything(tcfg.seed + ctx.rank)  # different router noise per rank
    return Runtime(ctx, amp_dtype, tcfg.seed, resolve_compile(tcfg.compile, ctx.device))


@dataclass
class RunData:
    """The run's datasets.

    Attributes:
        train_set: augmented training images.
        val_set: held-out validation images.
    """

    train_set: Dataset
    val_set: Dataset


def build_data(config: RunConfig, rt: Runtime, train_set: Optional[Dataset], val_set: Optional[Dataset],
               log: Callable[[str], None], progress: bool) -> RunData:
    """The given datasets, or those ``config.data`` describes (checked, split, cached)."""
    if train_set is not None:
        if val_set is None:
            raise ValueError("val_set is required when train_set is given.")
        return RunData(train_set, val_set)
    from engine.training.data import build_train_data, resolve_dataset_paths

    show = progress and rt.ctx.is_main
    if rt.ctx.distributed:
        # Rank 0 generates the synthetic set (if needed) before the others look for it.
        if rt.ctx.is_main:
            resolve_dataset_paths(config.data, progress=show)
        barrier()
    data = build_train_data(config.data, rt.seed, log=log, progress=show)
    if config.data.cache:
        # Fill the cache before workers fork so they share one copy.
        for ds in (data.train_set.dataset, data.val_set):
            if hasattr(ds, "preload"):
                ds.preload(progress=show)
    return RunData(data.train_set, data.val_set)


def _budget(tcfg: TrainSettings, ckpt: Optional[Mapping[str, Any]], new_budget: bool,
            clock: Callable[[], float], started_at: Optional[float]) -> Tuple[TimeBudget, bool]:
    """The time budget of this session and whether it continues a checkpoint's sized schedule."""
    seconds = tcfg.time_budget_seconds  # checked when the configuration was resolved
    margin = tcfg.budget_margin_seconds
    saved = (ckpt or {}).get("budget") or {}
    continuing = seconds is not None and not new_budget and saved.get("seconds") == seconds
    used = float(saved.get("used_s", 0.0)) if continuing else 0.0
    return TimeBudget(seconds, used, margin, clock, started_at), continuing and bool(
        saved.get("planned"))


#: Settings that size the schedule: a resume that changes one of them plans the schedule again.
_SCHEDULE_KEYS = ("epochs", "stage1_epochs", "warmup_steps", "adapt_to_budget", "time_budget")


def _stage1_epochs(tcfg: TrainSettings, mcfg: ModelSettings, log: Optional[Callable[[str], None]]) -> int:
    """Epochs with the backbone frozen: none for a model without pretrained weights under
    ``adapt_to_budget`` (a frozen random backbone learns nothing). Says so through ``log`` if given."""
    stage1_epochs = tcfg.stage1_epochs
    scratch = not (mcfg.pretrained or mcfg.pretrained_weights)
    if tcfg.adapt_to_budget and scratch and stage1_epochs > 0:
        stage1_epochs = 0
        if log is not None:
            log("No pretrained backbone: training everything from the start (stage 1 with a frozen random "
                "backbone learns nothing); turn off with --set train.adapt_to_budget=false.")
    return stage1_epochs


def _resumed_schedule_sizes(tcfg: TrainSettings, ckpt: Optional[Mapping[str, Any]], rt: Runtime,
                            batch_size: int, accumulation: int, budgeted: bool,
                            continuing: bool) -> Optional[Tuple[int, int, int]]:
    """``(total, stage 1, warm-up)`` steps of the checkpoint's schedule when this session continues it
    unchanged, else None (the schedule is planned again from this session's settings).

    A resume continues the saved schedule, not one rebuilt from the config: the first session may
    have changed it (no stage 1 from scratch, a time budget, a new process count), and rebuilding it
    would move the stage boundary and the rates. It is planned again when the resume changes the
    run's length (``--epochs``, ``--stage1-epochs``, warm-up), gives a fresh time budget (sized after
    the first steps), or changes batch size, accumulation or process count (the saved sizes count
    other steps; :func:`~engine.training.resume.restore_run` shifts the new plan to the same epochs).
    """
    saved = (ckpt or {}).get("scheduler") or {}
    if not all(k in saved for k in ("total_steps", "stage1_steps", "warmup_steps")):
        return None  # an older checkpoint: only the step was saved
    sizes = (int(saved["total_steps"]), int(saved["stage1_steps"]), int(saved["warmup_steps"]))
    if continuing:  # the rest of the budget: keep the schedule the first session sized
        return sizes
    before = dict((ckpt.get("config") or {}).get("train") or {})
    changed = [k for k in _SCHEDULE_KEYS if before.get(k, getattr(tcfg, k)) != getattr(tcfg, k)]
    layout = {"batch_size": batch_size, "accumulation_steps": accumulation, "world_size": rt.ctx.world_size}
    moved = [k for k, now in layout.items() if ckpt.get(k, now) != now]
    if budgeted or changed or moved:
        return None
    return sizes


def _build_loaders(config: RunConfig, rt: Runtime, data: RunData, log: Callable[[str], None]) -> RunLoaders:
    """The training and validation loaders, with ``data.num_workers: null`` resolved (and said)."""
    workers = config.data.num_workers
    if workers is None:
        # torchrun sets LOCAL_WORLD_SIZE: the processes on this host share its cores.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", rt.ctx.world_size))
        workers = auto_num_workers(rt.device.type, local)
        log(f"Data loader: {workers} worker process(es){' per process' if local > 1 else ''} "
            f"(data.num_workers: null picks them from the {usable_cpus()} usable CPU cores)")
    try:
        settings = LoaderSettings(config.train.batch_size, config.eval.batch_size, workers, rt.seed, rt.ctx.rank,
                                  rt.ctx.world_size, pin_memory=rt.device.type == "cuda",
                                  max_val_images=config.eval.max_images)
        return build_loaders(data.train_set, data.val_set, settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def build_run_state(config: RunConfig, rt: Runtime, data: RunData, ckpt: Optional[Mapping[str, Any]],
                    new_budget: bool, clock: Callable[[], float], started_at: Optional[float],
                    log: Callable[[str], None]) -> Tuple[RunState, RunLoaders]:
    """Create the model, EMA, optimizer, schedule, loaders and every counter of the run."""
    tcfg = config.train
    batch_size, accum = tcfg.batch_size, tcfg.accumulation_steps
    loaders = _build_loaders(config, rt, data, log)
    mcfg = config.model
    if ckpt is not None:
        mcfg = mcfg.model_copy(update=dict(pretrained=False, pretrained_weights=None))  # the checkpoint's weights
    model = build_model(mcfg.to_camoxpert()).to(rt.device)
    if rt.device.type == "cuda":
        # NHWC: cuDNN's faster convolution layouts, as `benchmark` measures the step.
        model.to(memory_format=torch.channels_last)
    ema = ModelEma(model, tcfg.ema_decay) if tcfg.use_ema else None
    steps_per_epoch = math.ceil(loaders.batches_per_epoch / accum)
    epochs = tcfg.epochs
    budget, continuing = _budget(tcfg, ckpt, new_budget, clock, started_at)
    saved_sizes = _resumed_schedule_sizes(tcfg, ckpt, rt, batch_size, accum, budget.enabled, continuing)
    # A new plan (new run, or a resume that changed its length) follows the same rules as the first session.
    stage1_epochs = _stage1_epochs(tcfg, config.model, log if saved_sizes is None else None)
    if rt.compile and not keep_compile_for_run_length(tcfg.compile, budget.seconds, epochs * steps_per_epoch):
        rt.compile = False
        log("Eager mode: this run is too short for torch.compile to pay back its compile time (auto compiles "
            f"runs of {COMPILE_MIN_BUDGET_S / 3600:g} h or {COMPILE_MIN_STEPS} steps and more); --compile forces it.")
    graphs, why = resolve_cuda_graphs(tcfg.cuda_graphs, rt, accum)
    if graphs or tcfg.cuda_graphs is True or rt.device.type == "cuda":
        log(f"CUDA graphs: {why}" + (": after 3 eager updates every update replays one captured graph "
                                     "(turn off with --set train.cuda_graphs=false)." if graphs else "."))
    optimizer = build_optimizer(model, tcfg.lr, tcfg.weight_decay, tcfg.betas, rt.device.type,
                                capturable_on=rt.device if graphs else None)
    schedule = TwoStageSchedule(
        optimizer, base_lr=tcfg.lr, total_steps=epochs * steps_per_epoch,
        stage1_steps=stage1_epochs * steps_per_epoch, warmup_steps=tcfg.warmup_steps,
        min_lr_ratio=tcfg.min_lr_ratio, stage2_lr_scale=tcfg.stage2_lr_scale,
        backbone_lr_scale=tcfg.backbone_lr_scale,
    )
    if saved_sizes is not None:  # continue the checkpoint's schedule: same stage boundaries, same rates
        schedule.resize(*saved_sizes)
    # GradScaler only for fp16: bf16 has fp32's range and needs no loss scaling.
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    lcfg = config.loss
    loss_fn = CODLoss(lcfg.side_weight, lcfg.aux_weight, lcfg.edge_kernel, lcfg.edge_weight)
    meters = StepMeters(rt.device, len(model.moe_layer_names), model.config.num_experts)
    train_model = compile_model(model) if rt.compile else model
    # The loss compiles too: eager, its dozens of small elementwise ops and their backward
    # launch one kernel each (the structure loss at four sizes); compiled, a few fused ones.
    train_loss = compile_model(loss_fn) if rt.compile else loss_fn
    run = RunState(
        runtime=rt, model=model, train_model=train_model, ema=ema, optimizer=optimizer, schedule=schedule,
        scaler=scaler, loss_fn=train_loss, meters=meters, budget=budget,
        clock=WallClock(time.perf_counter if clock is None else clock, started_at), grad_clip=tcfg.grad_clip,
        batch_size=batch_size, accumulation=accum, batches_per_epoch=loaders.batches_per_epoch,
        compiled=rt.compile, planned=not budget.enabled or continuing,
        graphed=GraphedTrainStep() if graphs else None,
    )
    if budget.enabled and run.planned and budget.left() <= 0:
        log("Time budget already used up by the checkpoint's run; give a new --time-budget to train longer.")
        schedule.resize(0, 0, 0)
    return run, loaders


def _wrap(run: RunState, module: nn.Module) -> nn.Module:
    if not run.runtime.ctx.distributed:
        return module
    # Depthwise conv weights (C, 1, k, k) get gradients whose stride on the size-1 dim differs
    # from DDP's bucket view; same memory layout, so the warning is noise.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    dev = run.runtime.device
    return DDP(module, device_ids=[run.runtime.ctx.local_rank] if dev.type == "cuda" else None)


def eager_model(run: RunState) -> nn.Module:
    """The uncompiled model, wrapped for DDP when distributed (compile fallback)."""
    run.train_model = None
    return _wrap(run, run.model)


def set_stage(run: RunState, stage: int, log: Callable[[str], None]) -> None:
    """Freeze (stage 1) or unfreeze (stage 2) the backbone, then (re)wrap for DDP."""
    if stage == run.stage:
        return
    run.model.backbone.requires_grad_(stage == 2)
    run.stage = stage
    if run.runtime.ctx.distributed:
        # DDP registers the parameters that require grad when it is built, so a new stage needs
        # a new wrapper; the old one's hooks go with it.
        inner = run.train_model.module if isinstance(run.train_model, DDP) else run.train_model
        run.train_model = None
        run.train_model = _wrap(run, inner)
    trainable = count_parameters(run.model, trainable_only=True)
    log(f"Stage {stage}: backbone {'frozen' if stage == 1 else 'fine-tuned'}; "
        f"{trainable / 1e6:.2f}M trainable parameters.")
