"""The training loop of ``train_ultimate.py train``.

One :class:`Trainer` runs one configuration to completion (or to a clean stop):

* single process, or DDP under torchrun (``RANK`` set): rank 0 alone logs and writes files,
  seeds are offset per rank, gradients are synchronised only on the update step (``no_sync``);
* AMP: bf16 where the GPU supports it, fp16 with a GradScaler otherwise, fp32 on CPU;
* gradient accumulation (loss divided by the micro-batches of the update) and clipping;
* a non-finite loss or gradient skips the update and is counted; ``max_nonfinite_steps`` in a
  row stop the run with :class:`TrainingDiverged` after saving ``last.pt``;
* two stages: backbone frozen for ``stage1_epochs``, then fine-tuned at a lower learning rate;
* optional EMA weights, used for validation and saved;
* ``last.pt`` every epoch and every ``save_every_steps``, ``best.pt`` by validation S-measure,
  ``config.yaml``, ``metrics.jsonl``, ``curves.png``;
* exact resumption (model, EMA, optimizer, schedule, scaler, RNG states and the position in the
  epoch), and SIGTERM/SIGINT saving ``last.pt`` before returning.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Subset

from engine.checkpoint import load_checkpoint, save_checkpoint, strip_state_dict_prefixes
from engine.compile import compile_model
from engine.config import ConfigError, save_config
from engine.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from engine.training.ema import ModelEma
from engine.training.losses import CODLoss
from engine.training.reporting import RunReporter
from engine.runtime import autocast_context, autocast_dtype, resolve_device
from engine.training.sampling import ResumableDistributedSampler
from engine.training.schedule import TwoStageSchedule, build_optimizer
from engine.training.signals import GracefulStop
from engine.training.rng import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from engine.training.validation_pass import validate
from models import CamoXpertConfig, build_model, count_parameters

__all__ = ["FitResult", "Trainer", "TrainingDiverged", "find_resume_checkpoint"]


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; ``last.pt`` holds the last good weights."""


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`.

    Attributes:
        status: ``"completed"`` or ``"interrupted"`` (signal received, ``last.pt`` saved).
        epoch: epochs completed.
        step: optimizer steps taken (skipped non-finite steps included).
        best_sm: best validation S-measure.
        nonfinite_steps: updates skipped for a non-finite loss or gradient.
        checkpoint_dir: where the files are.
        history: the per-epoch records written to ``metrics.jsonl`` by this process.
    """

    status: str
    epoch: int
    step: int
    best_sm: float
    nonfinite_steps: int
    checkpoint_dir: Path
    history: List[Dict[str, Any]] = field(default_factory=list)


def find_resume_checkpoint(resume: Optional[str], checkpoint_dir: os.PathLike) -> Optional[Path]:
    """Resolve ``--resume``: a path, ``auto`` (``last.pt`` of the checkpoint dir if present), or None.

    Raises:
        FileNotFoundError: an explicit path that does not exist.
    """
    if not resume:
        return None
    if resume == "auto":
        last = Path(checkpoint_dir) / "last.pt"
        return last if last.is_file() else None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint file.")
    return path


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Trainer:
    """Trains a CamoXpert from a resolved run config (see ``configs/default.yaml``).

    Args:
        config: the resolved config dict (:func:`engine.config.resolve_config`).
        train_set: training dataset; built from ``config["data"]`` when None. Items are dicts
            with ``image`` (3, H, W) and ``mask`` (1, H, W); a ``set_epoch`` method, when
            present, is called before each epoch.
        val_set: validation dataset (required when ``train_set`` is given).
        resume: a checkpoint dict or path to continue from.
        progress: show progress bars (rank 0).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        train_set: Optional[Dataset] = None,
        val_set: Optional[Dataset] = None,
        resume: Optional[Any] = None,
        progress: bool = True,
    ):
        self.config = dict(config)
        self.tcfg = self.config["train"]
        self.train_set = train_set
        self.val_set = val_set
        self.resume = resume
        self.progress = progress
        self.out_dir = Path(self.tcfg["checkpoint_dir"])
        self.ctx = DistContext()
        self.reporter: Optional[RunReporter] = None
        self.nonfinite_steps = 0
        self.consecutive_nonfinite = 0

    # ------------------------------------------------------------------ logging
    def log(self, message: str) -> None:
        """Print on rank 0 (and append to ``train.log`` once the reporter exists)."""
        if not self.ctx.is_main:
            return
        if self.reporter is not None:
            self.reporter.log(message)
        else:
            print(message, flush=True)

    # ------------------------------------------------------------------ setup
    def _setup_runtime(self) -> None:
        try:
            device = resolve_device(self.tcfg["device"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.ctx = init_distributed(device)
        self.device = self.ctx.device
        self.amp_dtype = autocast_dtype(self.device, self.tcfg["precision"])
        if self.amp_dtype is not None and self.device.type != "cuda":
            raise ConfigError(f"train.precision={self.tcfg['precision']} needs a CUDA device; use fp32 or auto on CPU.")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (loss, router) on tensor cores
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest conv kernels once
        self.seed = int(self.tcfg["seed"])
        seed_everything(self.seed + self.ctx.rank)  # different router noise per rank

    def _setup_data(self) -> None:
        if self.train_set is not None:
            if self.val_set is None:
                raise ValueError("val_set is required when train_set is given.")
            return
        from engine.training.data import build_train_data, resolve_dataset_paths

        show = self.progress and self.ctx.is_main
        if self.ctx.distributed:
            # Rank 0 generates the synthetic set (if needed) before the others look for it.
            if self.ctx.is_main:
                resolve_dataset_paths(self.config["data"], progress=show)
            barrier()
        data = build_train_data(self.config["data"], self.seed, log=self.log, progress=show)
        if self.config["data"].get("cache"):
            # Fill the cache before workers fork so they share one copy.
            for ds in (data.train_set.dataset, data.val_set):
                if hasattr(ds, "preload"):
                    ds.preload(progress=show)
        self.train_set, self.val_set = data.train_set, data.val_set
        self.n_skipped = data.n_skipped

    def _build_loaders(self) -> None:
        world, rank = self.ctx.world_size, self.ctx.rank
        self.batch_size = int(self.tcfg["batch_size"])
        self.accum = int(self.tcfg["accumulation_steps"])
        self.sampler = ResumableDistributedSampler(
            self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
        )
        self.num_batches = self.sampler.num_samples // self.batch_size  # drop_last
        if self.num_batches < 1:
            raise ConfigError(
                f"train.batch_size={self.batch_size} is larger than the {self.sampler.num_samples} training images "
                f"per process ({len(self.train_set)} in all, {world} process(es)): lower --batch-size."
            )
        self.steps_per_epoch = math.ceil(self.num_batches / self.accum)
        val_idx = list(range(rank, len(self.val_set), world))  # each rank scores its own shard, no padding
        self.val_loader = DataLoader(
            Subset(self.val_set, val_idx),
            batch_size=int(self.config["eval"]["batch_size"]),
            shuffle=False,
            num_workers=int(self.config["data"]["num_workers"]),
            pin_memory=self.device.type == "cuda",
            worker_init_fn=self._worker_init_fn(),
        )

    @staticmethod
    def _worker_init_fn() -> Optional[Callable[[int], None]]:
        try:
            from datasets import worker_init_fn

            return worker_init_fn  # one OpenCV thread per worker
        except ImportError:
            return None

    def _train_loader(self, epoch: int, start_batch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.sampler.set_start_index(start_batch * self.batch_size)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        # An explicit generator keeps the loader from drawing from the global torch RNG, whose
        # state (router noise) is saved and restored on resume.
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, self.ctx.rank) % 2**63)
        workers = int(self.config["data"]["num_workers"])
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            generator=gen,
            worker_init_fn=self._worker_init_fn(),
            persistent_workers=False,
            prefetch_factor=4 if workers > 0 else None,
        )

    def _setup_model(self, ckpt: Optional[Mapping[str, Any]]) -> None:
        mcfg = dict(self.config["model"])
        if ckpt is not None:
            mcfg.update(pretrained=False, pretrained_weights=None)  # the weights come from the checkpoint
        self.raw_model = build_model(CamoXpertConfig.from_dict(mcfg)).to(self.device)
        self.ema = ModelEma(self.raw_model, self.tcfg["ema_decay"]) if self.tcfg["use_ema"] else None
        self.optimizer = build_optimizer(
            self.raw_model, self.tcfg["lr"], self.tcfg["weight_decay"], self.tcfg["betas"], self.device.type
        )
        self.epochs = int(self.tcfg["epochs"])
        self.stage1_epochs = int(self.tcfg["stage1_epochs"])
        self.schedule = TwoStageSchedule(
            self.optimizer,
            base_lr=self.tcfg["lr"],
            total_steps=self.epochs * self.steps_per_epoch,
            stage1_steps=self.stage1_epochs * self.steps_per_epoch,
            warmup_steps=self.tcfg["warmup_steps"],
            min_lr_ratio=self.tcfg["min_lr_ratio"],
            stage2_lr_scale=self.tcfg["stage2_lr_scale"],
            backbone_lr_scale=self.tcfg["backbone_lr_scale"],
        )
        # GradScaler only for fp16: bf16 has fp32's range and needs no loss scaling.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        lcfg = self.config["loss"]
        self.loss_fn = CODLoss(lcfg["side_weight"], lcfg["aux_weight"], lcfg["edge_kernel"], lcfg["edge_weight"])
        self.compiled = compile_model(self.raw_model) if self.tcfg["compile"] else self.raw_model
        self.model: nn.Module = self.compiled
        self.stage = 0

    def _set_stage(self, stage: int) -> None:
        """Freeze (stage 1) or unfreeze (stage 2) the backbone, then (re)wrap for DDP."""
        if stage == self.stage:
            return
        self.raw_model.backbone.requires_grad_(stage == 2)
        self.stage = stage
        if self.ctx.distributed:
            # Depthwise conv weights (C, 1, k, k) get gradients whose stride on the size-1 dim
            # differs from DDP's bucket view; same memory layout, so the warning is noise.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            # DDP registers the parameters that require grad when it is built, so a new stage
            # needs a new wrapper; the old one's hooks go with it.
            self.model = None
            self.model = DDP(
                self.compiled,
                device_ids=[self.ctx.local_rank] if self.device.type == "cuda" else None,
            )
        trainable = count_parameters(self.raw_model, trainable_only=True)
        self.log(
            f"Stage {stage}: backbone {'frozen' if stage == 1 else 'fine-tuned'}; "
            f"{trainable / 1e6:.2f}M trainable parameters."
        )

    def _stage_of_epoch(self, epoch: int) -> int:
        return 1 if epoch < self.stage1_epochs else 2

    # ------------------------------------------------------------------ checkpoints
    def _state(self, epochs_done: int, batch_in_epoch: int, record: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        # Collective: every rank must call it at the same point.
        rng = all_gather_objects(capture_rng_state())
        return {
            "model_config": self.raw_model.config.to_dict(),
            "model": strip_state_dict_prefixes(self.raw_model.state_dict()),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "ema_updates": self.ema.num_updates if self.ema is not None else 0,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": int(epochs_done),
            "step": int(self.step),
            "batch_in_epoch": int(batch_in_epoch),
            "batch_size": self.batch_size,
            "world_size": self.ctx.world_size,
            "rng": rng,
            "config": self.config,
            "metrics": dict(record) if record else {},
            "best_Sm": float(self.best_sm),
            "nonfinite_steps": int(self.nonfinite_steps),
            "epoch_stats": {k: float(v) for k, v in self._epoch_sums().items()},
        }

    def _save(self, epochs_done: int, batch_in_epoch: int, record=None, best: bool = False) -> None:
        state = self._state(epochs_done, batch_in_epoch, record)
        if self.ctx.is_main:
            save_checkpoint(state, self.out_dir / "last.pt")
            if best:
                save_checkpoint(state, self.out_dir / "best.pt")

    def _load_state(self, ckpt: Mapping[str, Any]) -> None:
        self.raw_model.load_state_dict(strip_state_dict_prefixes(ckpt["model"]))
        if self.ema is not None:
            if ckpt.get("ema") is not None:
                self.ema.load_state_dict(strip_state_dict_prefixes(ckpt["ema"]), ckpt.get("ema_updates", 0))
            else:
                self.ema = ModelEma(self.raw_model, self.tcfg["ema_decay"])  # EMA switched on at resume
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler") is not None:
            self.schedule.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt.get("epoch", 0))
        self.step = int(ckpt.get("step", 0))
        self.best_sm = float(ckpt.get("best_Sm", float("-inf")))
        self.nonfinite_steps = int(ckpt.get("nonfinite_steps", 0))
        same_layout = ckpt.get("world_size") == self.ctx.world_size and ckpt.get("batch_size") == self.batch_size
        self.start_batch = int(ckpt.get("batch_in_epoch", 0)) if same_layout else 0
        if self.start_batch and self.start_batch >= self.num_batches:
            self.start_batch = 0
            self.start_epoch += 1
        if self.start_batch:
            stats = ckpt.get("epoch_stats") or {}
            self._sums = {k: torch.tensor(float(stats.get(k, 0.0)), device=self.device) for k in self._sums}
        rng = ckpt.get("rng")
        if isinstance(rng, list) and len(rng) == self.ctx.world_size:
            restore_rng_state(rng[self.ctx.rank])
        else:
            self.log("Note: world size differs from the checkpoint's; RNG streams are re-seeded.")
        if not same_layout and int(ckpt.get("batch_in_epoch", 0)):
            self.log("Note: batch size or world size changed; the interrupted epoch restarts from its beginning.")
        # The schedule follows the optimizer step count; a new --epochs changes its length.
        where = f"epoch {self.start_epoch + 1}" + (f", batch {self.start_batch}" if self.start_batch else "")
        self.log(f"Resumed at {where} (step {self.step}, best S-measure {self.best_sm:.4f}).")

    # ------------------------------------------------------------------ one step
    def _forward_loss(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Forward one micro-batch and return the loss terms (``loss`` is back-propagated)."""
        images = batch["image"].to(self.device, non_blocking=True)
        masks = batch["mask"].to(self.device, non_blocking=True).float()
        with autocast_context(self.device, self.amp_dtype):
            out = self.model(images)
        return self.loss_fn(out.logits, masks, out.side_logits, out.aux_loss)

    def _reset_sums(self) -> None:
        self._sums = {k: torch.zeros((), device=self.device) for k in ("loss", "main", "side", "aux", "n", "skipped")}

    def _epoch_sums(self) -> Dict[str, float]:
        return {k: float(v) for k, v in self._sums.items()}

    def _train_step(self, batches: List[Mapping[str, torch.Tensor]], stop: GracefulStop) -> bool:
        """One optimizer update over ``batches`` (the micro-batches). Returns True to stop."""
        n = len(batches)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        step_sums = {k: torch.zeros((), device=self.device) for k in ("loss", "main", "side", "aux")}
        for i, batch in enumerate(batches):
            last = i == n - 1
            # Gradients are all-reduced on the update step only.
            sync = contextlib.nullcontext() if (last or not self.ctx.distributed) else self.model.no_sync()
            with sync:
                terms = self._forward_loss(batch)
                loss = terms["loss"] / n  # the mean over the update's micro-batches
                self.scaler.scale(loss).backward()
            finite = torch.isfinite(terms["loss"].detach())
            bad |= ~finite
            for k in step_sums:
                step_sums[k] += torch.where(finite, terms[k].detach().float(), 0.0) / n
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        clip = float(self.tcfg["grad_clip"])
        if clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))  # the norm, nothing clipped
        if not self.scaler.is_enabled():
            # With fp16 the scaler handles inf gradients itself (that is how it finds its scale).
            bad |= ~torch.isfinite(grad_norm)
        # One host sync per update: agree across ranks on skipping the step and on stopping.
        flags = torch.stack([bad.float(), torch.tensor(float(stop.requested), device=self.device)])
        all_reduce_max(flags)
        skip, stop_now = (bool(v) for v in flags.tolist())
        if skip:
            self.nonfinite_steps += 1
            self.consecutive_nonfinite += 1
            self._sums["skipped"] += 1
        else:
            self.scaler.step(self.optimizer)
            self.consecutive_nonfinite = 0
            for k in step_sums:
                self._sums[k] += step_sums[k]
            self._sums["n"] += 1
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if not skip and self.ema is not None:
            self.ema.update(self.raw_model)
        self._last_lr = self._head_lr()  # the rate this update used (logged per epoch)
        self.schedule.step()
        self.step += 1
        self._last_step_loss = step_sums["loss"]
        return stop_now

    # ------------------------------------------------------------------ epochs
    def _run_epoch(self, epoch: int, stop: GracefulStop) -> Optional[str]:
        """Train one epoch from ``self.start_batch``. Returns ``"interrupted"`` when stopped."""
        loader = self._train_loader(epoch, self.start_batch)
        batch_pos = self.start_batch
        first_step = batch_pos // self.accum
        step0 = self.step
        self.start_batch = 0
        tcfg = self.tcfg
        save_every = int(tcfg["save_every_steps"])
        log_every = max(1, int(tcfg["log_every_steps"]))
        bar = None
        if self.ctx.is_main and self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.steps_per_epoch,
                initial=first_step,
                desc=f"Epoch {epoch + 1}/{self.epochs} [stage {self.stage}]",
                unit="step",
                dynamic_ncols=True,
                mininterval=1.0,
                file=sys.stdout,
                leave=True,
            )
        images_per_batch = self.batch_size * self.ctx.world_size
        it = iter(loader)
        t_epoch = time.perf_counter()
        images_seen = 0
        try:
            while batch_pos < self.num_batches:
                t0 = time.perf_counter()
                group = min(self.accum, self.num_batches - batch_pos)
                batches = [next(it) for _ in range(group)]
                stop_now = self._train_step(batches, stop)
                batch_pos += group
                images_seen += group * images_per_batch
                self._step_time = time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                    if self.step % log_every == 0 or batch_pos >= self.num_batches:
                        self._update_bar(bar, self.step - step0, images_seen, t_epoch)
                if self.ctx.is_main and self.step % log_every == 0 and self.reporter is not None:
                    self.reporter.scalars(
                        {"train/loss": float(self._last_step_loss), "train/lr": self._head_lr()},
                        self.step,
                    )
                if self.consecutive_nonfinite >= int(tcfg["max_nonfinite_steps"]):
                    if batch_pos < self.num_batches:
                        self._save(epoch, batch_pos)
                    else:
                        self._save(epoch + 1, 0)
                    raise TrainingDiverged(
                        f"Training stopped: {self.consecutive_nonfinite} optimizer steps in a row had a non-finite "
                        f"loss or gradient (NaN/inf; {self.nonfinite_steps} in all), so they were skipped. "
                        f"The weights before them are saved in {self.out_dir / 'last.pt'}. Try a lower --lr, "
                        f"a smaller train.grad_clip, or --set train.precision=fp32 (fp16 overflows), then "
                        f"--resume {self.out_dir / 'last.pt'}."
                    )
                if stop_now:
                    if batch_pos >= self.num_batches:
                        return "interrupted_at_epoch_end"
                    self._save(epoch, batch_pos)
                    return "interrupted"
                if save_every > 0 and self.step % save_every == 0 and batch_pos < self.num_batches:
                    self._save(epoch, batch_pos)
        finally:
            if bar is not None:
                bar.close()
        self._epoch_time = time.perf_counter() - t_epoch
        self._epoch_images = images_seen
        return None

    def _update_bar(self, bar, steps_this_run: int, images_seen: int, t_epoch: float) -> None:
        elapsed = time.perf_counter() - t_epoch
        total_steps = self.epochs * self.steps_per_epoch
        rate = images_seen / max(elapsed, 1e-9)
        sec_per_step = elapsed / max(1, steps_this_run)
        bar.set_postfix(
            loss=f"{float(self._last_step_loss):.4f}",
            lr=f"{self._head_lr():.2e}",
            img_s=f"{rate:.1f}",
            eta=_fmt_time((total_steps - self.step) * sec_per_step),  # whole run, validation excluded
            refresh=False,
        )

    def _end_of_epoch(self, epoch: int) -> Dict[str, Any]:
        eval_model = self.ema.module if self.ema is not None else self.raw_model
        t0 = time.perf_counter()
        val = validate(
            eval_model, self.val_loader, self.device, self.amp_dtype,
            self.config["loss"]["edge_kernel"], self.config["loss"]["edge_weight"],
        )
        val_time = time.perf_counter() - t0
        sums = self._sums.copy()
        totals = torch.stack([sums[k].float() for k in ("loss", "main", "side", "aux", "n")])
        all_reduce_sum(totals)
        loss, main, side, aux, n = totals.tolist()

        def mean(total):  # None (JSON null) when every step of the epoch was skipped
            return total / n if n > 0 else None

        is_best = val["Sm"] > self.best_sm  # NaN compares False
        if is_best:
            self.best_sm = val["Sm"]
        record = {
            "epoch": epoch + 1,
            "step": self.step,
            "stage": self.stage,
            "lr": getattr(self, "_last_lr", self._head_lr()),
            "train_loss": mean(loss),
            "train_main_loss": mean(main),
            "train_side_loss": mean(side),
            "train_aux_loss": mean(aux),
            "val_loss": val["loss"],
            "val_Sm": val["Sm"],
            "val_MAE": val["MAE"],
            "val_n": val["n"],
            "val_source": "ema" if self.ema is not None else "model",
            "best_Sm": self.best_sm,
            "is_best": bool(is_best),
            "nonfinite_steps": self.nonfinite_steps,
            "skipped_steps_epoch": int(float(self._sums["skipped"])),
            "epoch_time_s": round(getattr(self, "_epoch_time", 0.0), 3),
            "val_time_s": round(val_time, 3),
            "img_per_s": round(getattr(self, "_epoch_images", 0) / max(getattr(self, "_epoch_time", 0.0), 1e-9), 2),
        }
        self._save(epoch + 1, 0, record, best=is_best)
        if self.ctx.is_main:
            self.reporter.epoch_end(record)
            self.log(
                f"Epoch {epoch + 1}/{self.epochs}: train loss {_fmt(record['train_loss'])} | val loss "
                f"{val['loss']:.4f}  S-measure {val['Sm']:.4f}  MAE {val['MAE']:.4f} (n={val['n']})"
                f"{'  * best' if is_best else ''} | {record['img_per_s']:.1f} img/s"
            )
        return record

    # ------------------------------------------------------------------ entry point
    def fit(self) -> FitResult:
        """Train until ``train.epochs`` or a stop signal.

        Returns:
            A :class:`FitResult`.

        Raises:
            TrainingDiverged: repeated non-finite steps (``last.pt`` saved first).
            datasets.DatasetValidationError: bad samples without ``skip_bad_samples``.
        """
        try:
            return self._fit()
        finally:
            if self.reporter is not None:
                self.reporter.close()
            cleanup_distributed()

    def _fit(self) -> FitResult:
        self._setup_runtime()
        ckpt = self.resume
        if ckpt is not None and not isinstance(ckpt, Mapping):
            ckpt = load_checkpoint(ckpt)
        self._setup_data()
        self._build_loaders()
        self._setup_model(ckpt)
        self.start_epoch, self.start_batch, self.step = 0, 0, 0
        self.best_sm = float("-inf")
        self._reset_sums()
        if ckpt is not None:
            self._load_state(ckpt)
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.reporter = RunReporter(self.out_dir, enabled=True, completed_epochs=self.start_epoch)
            save_config(self.config, self.out_dir / "config.yaml")
        self._log_setup()
        history: List[Dict[str, Any]] = []
        status = "completed"
        epochs_done = self.start_epoch
        if self.start_epoch >= self.epochs:
            self.log(f"Nothing to do: the checkpoint already completed {self.start_epoch} of {self.epochs} epochs "
                     f"(raise --epochs to train longer).")
        with GracefulStop() as stop:
            for epoch in range(self.start_epoch, self.epochs):
                self._set_stage(self._stage_of_epoch(epoch))
                if self.start_batch == 0:
                    self._reset_sums()
                self.raw_model.train()
                outcome = self._run_epoch(epoch, stop)
                if outcome == "interrupted":
                    status = "interrupted"
                    break
                history.append(self._end_of_epoch(epoch))
                epochs_done = epoch + 1
                # A signal during validation is seen here; all ranks must agree to stop.
                if outcome == "interrupted_at_epoch_end" or self._agree_stop(stop):
                    if epochs_done < self.epochs:
                        status = "interrupted"
                    break
            if status == "interrupted":
                self.log(
                    f"Stopped by {stop.signal_name or 'a signal'}: saved {self.out_dir / 'last.pt'} "
                    f"(step {self.step}). Continue with --resume auto --checkpoint-dir {self.out_dir}."
                )
        if status == "completed":
            self.log(
                f"Done: {self.epochs} epochs, {self.step} steps, best validation S-measure {self.best_sm:.4f}. "
                f"Checkpoints in {self.out_dir}."
            )
        return FitResult(status, epochs_done, self.step, self.best_sm, self.nonfinite_steps, self.out_dir, history)

    def _agree_stop(self, stop: GracefulStop) -> bool:
        flag = torch.tensor([float(stop.requested)], device=self.device)
        all_reduce_max(flag)
        return bool(flag.item())

    def _head_lr(self) -> float:
        for group in self.optimizer.param_groups:
            if not group.get("is_backbone", False):
                return float(group["lr"])
        return float(self.optimizer.param_groups[0]["lr"])

    def _log_setup(self) -> None:
        c = self.ctx
        m = self.raw_model.config
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}[self.amp_dtype]
        eff = self.batch_size * self.accum * c.world_size
        self.log(
            f"Device {self.device} x{c.world_size} ({'DDP ' + ('nccl' if self.device.type == 'cuda' else 'gloo') if c.distributed else 'single process'}), "
            f"precision {precision}{', torch.compile' if self.tcfg['compile'] else ''}."
        )
        self.log(
            f"Model {m.backbone}, {m.num_experts} experts top-{m.top_k}, "
            f"{'SDPA' if m.use_flash_attn else 'math'} attention: "
            f"{count_parameters(self.raw_model) / 1e6:.2f}M parameters."
        )
        self.log(
            f"{len(self.train_set)} training / {len(self.val_set)} validation images at "
            f"{self.config['data']['img_size']}px; batch {self.batch_size} x {self.accum} accumulation x "
            f"{c.world_size} process(es) = {eff}; {self.steps_per_epoch} steps/epoch, {self.epochs} epochs "
            f"(stage 1: {self.stage1_epochs}). Checkpoints -> {self.out_dir}"
        )
