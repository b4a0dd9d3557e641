"""The training loop of ``train_ultimate.py train``.

:class:`Trainer` runs one configuration to completion, to a clean stop (signal, time budget) or
to a divergence stop, from small pieces: the runtime (:mod:`engine.training.setup`), data and
loaders (:mod:`~engine.training.data`, :mod:`~engine.training.loaders`), the update
(:mod:`~engine.training.step`), the cadence of validation, saves and stops
(:mod:`~engine.training.cadence`), checkpoints and resumption (:mod:`~engine.training.resume`),
the time budget (:mod:`~engine.training.budget`) and the reports
(:mod:`~engine.training.reporting`). The run's state is one :class:`~engine.training.state.RunState`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
from torch.utils.data import Dataset

from engine.config import ConfigError, save_config
from engine.distributed import barrier, cleanup_distributed
from engine.settings import RunConfig, as_run_config
from engine.sharing.publish import write_run_pretrained
from engine.training.budget import RunCosts, StepTimeProbe, plan_steps
from engine.training.cadence import Cadence
from engine.training.graphed_step import raised_at
from engine.training.loaders import RunLoaders, shutdown_loader
from engine.training.reporting import RunReporter
from engine.training.request import RunRequest
from engine.training.resume import (
    check_model_matches,
    load_resume_checkpoint,
    restore_run,
    save_best,
    save_last,
)
from engine.training.run_folder import prepare_run_folder, release_run_folder
from engine.training.setup import build_data, build_run_state, eager_model, set_stage, setup_runtime
from engine.training.rng import host_rng_untouched
from engine.training.setup_report import setup_lines
from engine.training.signals import GracefulStop
from engine.training.state import RunState
from engine.training.step import train_step
from engine.training.validation_pass import ValidationBatches, validate, validation_examples
from models.sdpa_probe import AttentionBackendError, require_usable_attention

__all__ = ["FitResult", "RunRequest", "Trainer", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; ``last.pt`` holds the last good weights."""


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`.

    Attributes:
        status: ``"completed"``, ``"nothing"`` (the checkpoint had already finished), ``"budget"`` (time budget used up, checkpoints written) or
            ``"interrupted"`` (signal received, ``last.pt`` saved).
        epoch: epochs completed.
        step: optimizer steps taken (skipped non-finite steps included).
        best_sm: best validation S-measure.
        nonfinite_steps: updates skipped for a non-finite loss or gradient.
        checkpoint_dir: where the files are.
        history: the validation records written to ``metrics.jsonl`` by this process.
        summary: where the wall time went (see :class:`~engine.training.timing.WallClock`).
    """

    status: str
    epoch: int
    step: int
    best_sm: float
    nonfinite_steps: int
    checkpoint_dir: Path
    history: List[Dict[str, Any]] = field(default_factory=list)
    summary: Dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Trains a CamoXpert from a resolved run config (see ``configs/default.yaml``).

    Args:
        config: the resolved settings (:meth:`engine.settings.ConfigRequest.resolve`), or a config
            dict (:func:`engine.config.resolve_config`), checked into settings here.
        request: fresh or resumed, and what the run may replace (:class:`RunRequest`); by
            default a fresh run that refuses to replace another.
        train_set: training dataset; built from ``config["data"]`` when None. Items are dicts
            with ``image`` (3, H, W) and ``mask`` (1, H, W).
        val_set: validation dataset (required when ``train_set`` is given).
        progress: show progress bars (rank 0).
        clock: monotonic clock (tests pass a fake one).
        started_at: ``clock()`` at process start, so start-up time is counted.
    """

    def __init__(self, config: "RunConfig | Mapping[str, Any]", request: RunRequest = RunRequest(),
                 train_set: Optional[Dataset] = None, val_set: Optional[Dataset] = None, progress: bool = True,
                 clock: Callable[[], float] = time.perf_counter, started_at: Optional[float] = None):
        self.settings = as_run_config(config)
        self.config = self.settings.to_dict()  # the shape config.yaml and checkpoints store
        self.tcfg = self.settings.train
        self.request = request
        self.train_set, self.val_set = train_set, val_set
        self.progress, self.clock, self.started_at = progress, clock, started_at
        self.out_dir = Path(self.tcfg.checkpoint_dir)
        self.reporter = RunReporter(self.out_dir, enabled=False)
        self._loaders: Optional[RunLoaders] = None
        self._val_batches: Optional[ValidationBatches] = None
        self._cadence: Optional[Cadence] = None
        self._val_set_used: Optional[Dataset] = None
        self._resumed_validated_step: Optional[int] = None  # the last validation a resumed checkpoint records

    def log(self, message: str) -> None:
        """Print on rank 0 and append to ``train.log``."""
        self.reporter.log(message)

    def fit(self) -> FitResult:
        """Train until the schedule ends, the budget runs out, or a stop signal.

        Raises:
            TrainingDiverged: repeated non-finite steps (``last.pt`` saved first).
            engine.config.ConfigError: invalid settings, a run folder holding another run, a
                checkpoint whose model differs.
            datasets.DatasetValidationError: bad samples without ``skip_bad_samples``.
        """
        try:
            return self._fit()
        finally:
            self._teardown()  # already done on success; here for errors and interruptions
            release_run_folder(self.out_dir)
            cleanup_distributed()

    def _teardown(self) -> None:
        """Stop the loader workers, free the cached validation split, close the reports.

        Done explicitly, before the summary is written: left to garbage collection at exit,
        PyTorch joins busy persistent workers one by one (up to 5 s each, see
        :func:`~engine.training.loaders.shutdown_loader`). Safe to call twice.
        """
        if self._loaders is not None:
            self._loaders.close()
        self._val_batches = None
        self.reporter.close()

    def _fit(self) -> FitResult:
        resume = self.request.resume
        ckpt = load_resume_checkpoint(resume) if resume is not None else None
        if ckpt is not None:
            check_model_matches(self.config, ckpt, resume if not isinstance(resume, Mapping) else "checkpoint")
        rt = setup_runtime(self.tcfg)
        try:  # before anything is written: a pinned kernel that cannot run here fails the first step
            require_usable_attention(rt.device, rt.amp_dtype or torch.float32,
                                     use_flash_attn=self.settings.model.use_flash_attn)
        except AttentionBackendError as exc:
            raise ConfigError(str(exc)) from exc
        prepare_run_folder(self.out_dir, ckpt is not None, self.request.overwrite, rt.ctx.is_main, log=print,
                           resumed_from=self.request.source)
        barrier()  # every rank has checked the folder before rank 0 writes into it
        if rt.ctx.is_main:
            save_config(self.config, self.out_dir / "config.yaml")
            self.reporter = RunReporter(self.out_dir, resume_step=int(ckpt["step"]) if ckpt else 0)
        data = build_data(self.settings, rt, self.train_set, self.val_set, self.log, self.progress)
        self._val_set_used = data.val_set  # its files feed the end-of-run figure
        run, loaders = build_run_state(self.settings, rt, data, ckpt, self.request.new_budget, self.clock,
                                       self.started_at, self.log)
        if ckpt is not None:
            restore_run(run, ckpt, self.out_dir, self.log)
            self._resumed_validated_step = (ckpt.get("metrics") or {}).get("step", -1)
            loaders.batch_sampler.start_epoch, loaders.batch_sampler.start_batch = run.epoch, run.batch_in_epoch
        self._loaders = loaders
        self._val_batches = ValidationBatches(
            loaders.val, run.runtime.device, max_bytes=self.settings.eval.device_cache_mb * 2**20,
            half=run.runtime.device.type == "cuda" and run.runtime.amp_dtype is not None,
            on_cached=lambda: shutdown_loader(loaders.val))  # cached: its workers have nothing left to do
        self._adapt_augmentation(run, loaders)
        for line in setup_lines(run, len(data.train_set), len(data.val_set), self.settings.data.img_size,
                                self.out_dir):
            self.log(line)
        run.clock.seconds["startup"] = run.clock.elapsed()
        # From the first step to the end, a signal means "save last.pt and stop": the final
        # validation and save are inside the handler too, and so are the summary and teardown
        # after them (a signal there changes nothing: last.pt is written).
        with GracefulStop() as stop:
            status = self._loop(run, loaders, stop)
            status = self._final_validation_and_save(run, status, stop)
            return self._finish(run, status, stop)

    # ------------------------------------------------------------------ the loop
    def _loop(self, run: RunState, loaders: RunLoaders, stop: GracefulStop) -> str:
        """Train until the schedule's last step; returns the run's status."""
        # Short budgets cannot wait for 25 steps: 2% of the budget measured is enough.
        probe = StepTimeProbe(clock=self.clock, enough_s=0.02 * run.budget.seconds if run.budget.enabled else math.inf)
        needed = run.step + probe.warmup + probe.measure + 1
        if not run.planned and run.schedule.total_steps < needed:
            # A time budget sizes the schedule once the probe has timed the first steps; the length
            # --epochs gives is provisional until then and must not end the run first (a short
            # --epochs, or a resume with a fresh budget past it).
            sched = run.schedule
            sched.resize(needed, sched.stage1_steps, sched.warmup_steps)
        if run.step >= run.schedule.total_steps:
            if run.step > 0 and self._resumed_validated_step not in (None, run.step):
                return "completed"  # stopped during its final validation: only that and the save are left
            self.log(f"Nothing to do: the checkpoint already took {run.step} of {run.schedule.total_steps} steps "
                     f"(raise --epochs, or give a --time-budget, to train longer).")
            return "nothing"
        cadence = self._cadence = Cadence(self.tcfg, run.runtime.ctx.distributed, self.clock)
        run.last_val_at = run.last_save_at = self.clock()
        images_per_batch = run.batch_size * run.runtime.ctx.world_size
        bar = self.reporter.progress_bar(run, self.progress)
        it = iter(loaders.train)
        probe.mark()
        while run.step < run.schedule.total_steps:
            set_stage(run, run.schedule.stage(run.step), self.log)
            group = min(run.accumulation, run.batches_per_epoch - run.batch_in_epoch)
            with run.clock.phase("data_wait"):
                batches = [next(it) for _ in range(group)]
            with run.clock.phase("steps"):
                self._step(run, batches)
            run.batch_in_epoch += group
            run.images_trained += group * images_per_batch
            epoch_end = run.batch_in_epoch >= run.batches_per_epoch
            if epoch_end:
                run.epoch, run.batch_in_epoch = run.epoch + 1, 0
            probe.mark()
            if probe.ready and not run.step_s:
                self._measured(run, probe, loaders)
            bar.update(1)
            if not cadence.is_control_point(run.step, epoch_end, stop.requested):
                continue
            status = self._control_point(run, loaders, cadence, stop, epoch_end, bar)
            if status is not None:
                return status
        return "completed"

    def _control_point(self, run: RunState, loaders: RunLoaders, cadence: Cadence, stop: GracefulStop,
                       epoch_end: bool, bar) -> Optional[str]:
        """Report, then validate, save or stop as the cadence decides; returns a status to stop with."""
        with run.clock.phase("steps"):  # the host waits here for the queued GPU work
            out_of_time = run.budget.must_stop(run.val_s + run.save_s)
            d = cadence.decide(run.step, epoch_end, stop.requested, run.meters.consecutive_bad,
                               run.last_val_at, run.last_save_at, out_of_time)
            window = run.meters.read_window()
        run.nonfinite_steps += int(window["skipped"])
        self.reporter.step_scalars(run, window, bar)
        if cadence.diverged(d.consecutive_bad):
            self._save_last(run)
            raise TrainingDiverged(self._diverged_message(run, d.consecutive_bad))
        if d.validate and run.step < run.schedule.total_steps:
            self._validate(run, loaders)
        if d.stop_signal or d.out_of_time or d.save:
            self._save_last(run)
        if d.stop_signal:
            return "interrupted"
        if d.out_of_time:
            self.log(f"Time budget: {run.budget.left():.0f} s left, enough for the final validation and "
                     f"save only; stopping training at step {run.step} of {run.schedule.total_steps}.")
            return "budget"
        return None

    def _step(self, run: RunState, batches) -> None:
        """One update; a compiled model that fails to compile falls back to eager once, and so
        does a CUDA-graph capture that fails."""
        if run.graphed is not None and len(batches) == 1:
            if run.graphed_stage != run.stage:  # other trainable parameters: capture again
                run.graphed.reset()
                run.graphed_stage = run.stage
            try:
                run.graphed(run, batches[0])
                return
            except Exception as exc:  # noqa: BLE001 - any capture or compiler failure
                if self._compile_failed(run, exc):  # the first eager update compiles
                    run.graphed.reset()
                    run.graphed(run, batches[0])
                    return
                if run.graphed.captured or run.graphed.done < run.graphed.eager_steps:
                    raise  # an eager update or a replay failed: a real error, not the capture
                self.log(f"CUDA-graph capture failed ({type(exc).__name__} at {raised_at(exc)}: "
                         f"{str(exc).splitlines()[0][:160]}); continuing with eager updates.")
                torch.cuda.synchronize(run.runtime.device)
                run.optimizer.zero_grad(set_to_none=True)
                run.graphed = None
        try:
            train_step(run, batches)
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            if not self._compile_failed(run, exc):
                raise
            train_step(run, batches)

    def _compile_failed(self, run: RunState, exc: Exception) -> bool:
        """Whether ``exc`` is a compiled model failing its first update; if so, go on eagerly."""
        if not run.compiled or run.step > 0 and run.step_s:
            return False
        self.log(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                 f"continuing without compiling.")
        run.optimizer.zero_grad(set_to_none=True)
        run.train_model = eager_model(run)
        run.loss_fn = getattr(run.loss_fn, "_orig_mod", run.loss_fn)  # the compiled loss's module
        run.compiled = False
        return True

    def _measured(self, run: RunState, probe: StepTimeProbe, loaders: RunLoaders) -> None:
        """The step time is known: log it (and the compile time), size a budgeted schedule."""
        run.step_s = probe.seconds_per_step()
        first = probe.marks[1] - probe.marks[0]
        msg = f"Step time {run.step_s * 1000:.0f} ms ({run.batch_size * run.accumulation * run.runtime.ctx.world_size / run.step_s:.1f} img/s)"
        if run.compiled:
            msg += f"; compiling took about {max(0.0, first - run.step_s):.1f} s (first step {first:.1f} s)"
        self.log(msg + ".")
        if not run.val_s:  # estimate until the first validation measures it: inference ~1/3 of a step
            n_val = len(loaders.val.dataset)
            run.val_s = 0.5 + n_val * run.step_s / (run.batch_size * run.accumulation)
        if not run.planned:
            self._plan(run, loaders)

    def _plan(self, run: RunState, loaders: RunLoaders) -> None:
        tcfg = self.tcfg
        epochs = tcfg.epochs
        stage1_fraction = run.schedule.stage1_steps / max(1, epochs * run.steps_per_epoch)
        # Validations happen at epoch ends once val_every_seconds passed, or every val_every_steps.
        val_every = max(tcfg.val_every_seconds, run.steps_per_epoch * run.step_s,
                        self._budget_val_interval(run))
        if tcfg.val_every_steps > 0:
            val_every = min(val_every, tcfg.val_every_steps * run.step_s)
        costs = RunCosts(run.step_s, run.val_s, val_every, max(run.save_s, 1.0), tcfg.save_every_seconds)
        plan = plan_steps(run.budget.left(), costs, run.step, stage1_fraction, tcfg.warmup_steps,
                          run.budget.margin_s)
        stage1 = max(plan.stage1_steps, run.step) if run.schedule.stage1_steps > run.step else plan.stage1_steps
        run.schedule.resize(plan.total_steps, min(stage1, plan.total_steps), plan.warmup_steps)
        run.planned = True
        self.log(f"Time budget: {run.budget.left():.0f} s left; schedule sized to {plan.total_steps} steps "
                 f"({plan.total_steps / run.steps_per_epoch:.1f} epochs, stage 1: {run.schedule.stage1_steps} steps, "
                 f"warm-up {plan.warmup_steps}; {', '.join(plan.notes)}).")
        self._adapt_augmentation(run, loaders)

    def _adapt_augmentation(self, run: RunState, loaders: RunLoaders) -> None:
        short = self.tcfg.short_run_steps
        if (self.tcfg.adapt_to_budget and run.planned and not run.light_augment
                and run.schedule.total_steps < short):
            run.light_augment = True
            self.log(f"Short run ({run.schedule.total_steps} < train.short_run_steps={short} steps): light "
                     f"augmentation (flips only). Turn off with --set train.adapt_to_budget=false.")
        loaders.batch_sampler.light = run.light_augment

    # ------------------------------------------------------------------ validation and saving
    def _budget_val_interval(self, run: RunState) -> float:
        """Seconds of training between validations so that, in a time-budget run, validating
        takes at most ``eval.budget_fraction`` of the time (0 without a budget)."""
        if not run.budget.enabled:
            return 0.0
        fraction = self.settings.eval.budget_fraction
        if fraction <= 0:
            return math.inf  # validate only at the end
        return run.val_s * (1.0 - fraction) / fraction

    def _validate(self, run: RunState, loaders: RunLoaders,
                  stop: Optional[Callable[[], bool]] = None) -> Optional[Dict[str, Any]]:
        """Score the EMA (or model) on the held-out images; write best.pt and the record.

        Returns None, writing nothing, when ``stop`` cut the pass short.
        """
        t0 = self.clock()
        # The training random streams must not see validation (its loader draws seeds): a run is
        # then the same whenever it validates, and a resumed run the same as an uninterrupted one.
        with run.clock.phase("validation"), host_rng_untouched():
            val = validate(run.eval_model(), self._val_batches, run.runtime.device, run.runtime.amp_dtype,
                           self.settings.loss.edge_kernel, self.settings.loss.edge_weight, stop=stop)
            if val is None:
                return None
            examples = (validation_examples(run.eval_model(), self._val_batches, run.runtime.device,
                                            run.runtime.amp_dtype) if self.reporter.wants_images else None)
            interval = run.meters.read_interval(run.model.moe_layer_names, run.model.expert_names,
                                                run.model.config.top_k)
        run.val_s = self.clock() - t0
        if self._cadence is not None and run.budget.enabled:  # measured cost -> spacing of the next ones
            self._cadence.val_every_s = max(self.tcfg.val_every_seconds, self._budget_val_interval(run))
        is_best = val["Sm"] > run.best_sm  # NaN compares False
        if is_best:
            run.best_sm = val["Sm"]
        elapsed = self.clock() - run.last_val_at
        epoch = run.epoch if run.batch_in_epoch == 0 else round(run.epoch_progress, 3)
        record = {
            "epoch": epoch, "step": run.step, "stage": run.stage, "lr": run.last_lr,
            **{k: interval[k] for k in ("train_loss", "train_main_loss", "train_side_loss", "train_aux_loss")},
            "val_loss": val["loss"], "val_Sm": val["Sm"], "val_MAE": val["MAE"], "val_n": val["n"],
            "val_nonfinite": val.get("nonfinite", 0), "val_source": "ema" if run.ema is not None else "model",
            "best_Sm": run.best_sm, "is_best": bool(is_best), "nonfinite_steps": run.nonfinite_steps,
            "skipped_steps": interval["skipped_steps"], "interval_s": round(elapsed, 3),
            "val_time_s": round(run.val_s, 3), "router": interval["router"],
        }
        run.history.append(record)
        if run.runtime.ctx.is_main:
            with run.clock.phase("checkpoints"):
                if is_best:  # best.pt before the record and last.pt: a kill in between loses nothing
                    save_best(run, self.out_dir, self.config, record)
            self.reporter.validation(record, run, examples)
        run.last_val_at = self.clock()
        return record

    def _save_last(self, run: RunState) -> None:
        t0 = self.clock()
        with run.clock.phase("checkpoints"):
            save_last(run, self.out_dir, self.config, run.runtime.ctx.is_main)
        run.save_s = self.clock() - t0
        run.last_save_at = self.clock()

    def _diverged_message(self, run: RunState, consecutive: int) -> str:
        return (f"Training stopped: {consecutive} optimizer steps in a row had a non-finite loss or gradient "
                f"(NaN/inf; {run.nonfinite_steps} in all), so they were skipped. The weights before them are saved "
                f"in {self.out_dir / 'last.pt'}. Try a lower --lr, a smaller train.grad_clip, or --set "
                f"train.precision=fp32 (fp16 overflows), then --resume {self.out_dir / 'last.pt'}; "
                f"--set train.max_nonfinite_steps=0 never stops.")

    def _final_validation_and_save(self, run: RunState, status: str, stop: GracefulStop) -> str:
        """Validate the last weights (unless just done) and save last.pt; returns the final status.

        A signal during the validation ends it early (single process; with several, every rank
        must finish it) and last.pt is saved all the same: the status is then ``interrupted`` and
        a resumed run does the final validation.
        """
        if status not in ("completed", "budget") or run.step <= 0:
            return status
        if not run.history or run.history[-1]["step"] != run.step:
            cut_short = None if run.runtime.ctx.distributed else (lambda: stop.requested)
            if self._validate(run, self._loaders, stop=cut_short) is None:
                status = "interrupted"
        self._save_last(run)
        return status

    def _finish(self, run: RunState, status: str, stop: GracefulStop) -> FitResult:
        with run.clock.phase("teardown"):
            self._teardown()
        summary = run.clock.summary(run.images_trained)
        if run.runtime.ctx.is_main:
            self.reporter.summary(summary, status=status, step=run.step)
            write_run_pretrained(self.out_dir, status, log=self.log)  # best.pt as <out_dir>/pretrained/
            if status != "nothing":
                from engine.evaluation.run_figure import draw_run_figure  # the metric stack, only here

                draw_run_figure(self.out_dir, getattr(self._val_set_used, "samples", None), run.runtime.device, self.log)
        if status == "interrupted":
            self.log(f"Stopped by {stop.signal_name or 'a signal'}: saved {self.out_dir / 'last.pt'} (step {run.step}). "
                     f"Continue with --resume auto --checkpoint-dir {self.out_dir}.")
        elif status != "nothing":
            best = f"{run.best_sm:.4f}" if math.isfinite(run.best_sm) else "n/a"
            self.log(f"Done: {run.epoch_progress:.4g} epochs, {run.step} steps, best validation S-measure {best}"
                     f"{' (time budget reached)' if status == 'budget' else ''}. Checkpoints in {self.out_dir}.")
        return FitResult(status, run.epoch, run.step, run.best_sm, run.nonfinite_steps, self.out_dir,
                         run.history, summary)
