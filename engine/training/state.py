"""The state of one training run, in one place.

:class:`Runtime` says where the run executes (device, processes, precision, seed);
:class:`RunState` holds everything that changes while it trains and everything last.pt saves.
Both are created up front with every field, so nothing is added to them later.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from engine.distributed import DistContext
from engine.training.budget import TimeBudget
from engine.training.ema import ModelEma
from engine.training.meters import StepMeters
from engine.training.schedule import TwoStageSchedule
from engine.training.timing import WallClock

__all__ = ["Runtime", "RunState"]


@dataclass
class Runtime:
    """Where and how the run executes.

    Attributes:
        ctx: rank, world size and device of this process.
        amp_dtype: autocast dtype (None: fp32).
        seed: run seed (offset per rank for the global generators).
        compile: whether the model is compiled.
    """

    ctx: DistContext
    amp_dtype: Optional[torch.dtype]
    seed: int
    compile: bool

    @property
    def device(self) -> torch.device:
        """This process's compute device."""
        return self.ctx.device


@dataclass
class RunState:
    """What a run trains and where it is.

    Attributes:
        runtime: see :class:`Runtime`.
        model: the unwrapped model (what checkpoints save).
        train_model: what the step calls: the model, compiled and/or wrapped for DDP.
        ema: EMA weights, or None.
        optimizer: AdamW over every parameter (frozen ones get no gradient).
        schedule: the two-stage learning-rate schedule (its ``total_steps`` ends the run).
        scaler: GradScaler (enabled for fp16 only).
        loss_fn: the training loss.
        meters: on-device loss and router sums.
        budget: the time budget (disabled without ``--time-budget``).
        clock: wall time per phase.
        grad_clip: max gradient norm (0: no clipping).
        batch_size: images per process and micro-batch.
        accumulation: micro-batches per update.
        batches_per_epoch: micro-batches per epoch and process.
        step: optimizer updates taken (skipped ones included).
        epoch: epochs completed.
        batch_in_epoch: micro-batches of the current epoch done.
        stage: 1 while the backbone is frozen, 2 after, 0 before the first step.
        best_sm: best validation S-measure that best.pt holds.
        nonfinite_steps: updates skipped for a non-finite loss or gradient, in all.
        images_trained: images this session trained on (all processes).
        last_lr: the head learning rate of the last update.
        light_augment: short-run augmentation in use.
        compiled: the step runs the compiled model (False after a fallback to eager).
        graphed: the CUDA-graph runner of single-micro-batch updates
            (:class:`~engine.training.step.GraphedTrainStep`), or None for eager updates.
        graphed_stage: the stage the graph was captured in.
        planned: the schedule is sized to the budget (or needs no sizing).
        last_val_at: clock time of the end of the last validation.
        last_save_at: clock time of the end of the last last.pt write.
        val_s: seconds one validation took (estimated until measured).
        save_s: seconds one last.pt write took (estimated until measured).
        step_s: measured seconds per update (0 until measured).
        history: validation records of this session.
    """

    runtime: Runtime
    model: nn.Module
    train_model: nn.Module
    ema: Optional[ModelEma]
    optimizer: torch.optim.Optimizer
    schedule: TwoStageSchedule
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    meters: StepMeters
    budget: TimeBudget
    clock: WallClock
    grad_clip: float
    batch_size: int
    accumulation: int
    batches_per_epoch: int
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    stage: int = 0
    best_sm: float = -math.inf
    nonfinite_steps: int = 0
    images_trained: int = 0
    last_lr: float = 0.0
    light_augment: bool = False
    compiled: bool = False
    graphed: Optional[Any] = None
    graphed_stage: int = 0
    planned: bool = True
    last_val_at: float = 0.0
    last_save_at: float = 0.0
    val_s: float = 0.0
    save_s: float = 0.0
    step_s: float = 0.0
    history: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer updates per epoch (the last may take fewer micro-batches)."""
        return math.ceil(self.batches_per_epoch / self.accumulation)

    @property
    def epoch_progress(self) -> float:
        """Epochs done, fractional inside an epoch."""
        return self.epoch + self.batch_in_epoch / self.batches_per_epoch

    def head_lr(self) -> float:
        """Learning rate of the non-backbone parameters (from the schedule: no device read)."""
        return self.schedule.lr_at(self.schedule.step_count, is_backbone=False)

    def trainable_params(self) -> List[nn.Parameter]:
        """Parameters that currently receive gradients."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def eval_model(self) -> nn.Module:
        """The weights validation scores and best.pt keeps: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model
