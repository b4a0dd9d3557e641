"""What a run leaves behind for people: ``metrics.jsonl``, ``curves.png``, ``train.log``, TensorBoard.

Only rank 0 creates a :class:`RunReporter`; other ranks get a disabled one.

``metrics.jsonl`` and ``run_summary.json`` are the run's record: failing to write them stops the
run with :class:`~engine.files.FileWriteError` naming the file. ``curves.png``, TensorBoard and
``train.log`` are conveniences (the same numbers are in the JSONL, the same lines on stdout):
failing to write one is a warning, once per file, and training goes on.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Set

from engine.files import atomic_write_text, write_error
from engine.plotting import plot_training_curves

__all__ = ["RunReporter", "TENSORBOARD_NAMES", "fmt_loss", "read_metrics", "router_line"]

#: TensorBoard tags of the validation record's numbers: the plain names people search for.
TENSORBOARD_NAMES = {
    "val_Sm": "val/S", "val_MAE": "val/MAE", "val_loss": "val/loss", "best_Sm": "val/best_S",
    "val_n": "val/images", "val_nonfinite": "val/nonfinite", "val_time_s": "val/seconds",
    "train_loss": "train/interval_loss", "train_main_loss": "train/interval_main_loss", "lr": "train/lr_at_validation",
}


def read_metrics(path: os.PathLike) -> List[Dict[str, Any]]:
    """Records of a ``metrics.jsonl`` (a torn last line from a killed run is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def fmt_loss(value: Optional[float]) -> str:
    """A loss for a log line (``n/a`` when every step of the interval was skipped)."""
    return "n/a" if value is None else f"{value:.4f}"


def router_line(router: Mapping[str, Any]) -> str:
    """One log line of router health: each MoE layer's expert shares and balance loss."""
    parts = []
    for layer, stats in router.items():
        shares = " ".join(f"{name} {100 * v:.0f}%" for name, v in stats["share"].items() if v is not None)
        bal = stats.get("balance_loss")
        parts.append(f"{layer}: {shares}" + (f" (balance loss {bal:.4f})" if bal is not None else ""))
    return "Router " + "; ".join(parts)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


class RunReporter:
    """Writes the per-epoch records and the human-readable log of one run.

    Args:
        out_dir: the checkpoint directory.
        enabled: False on ranks other than 0 (every method becomes a no-op).
        resume_step: on resume, records of later optimizer steps (and summaries of earlier
            sessions) are dropped from ``metrics.jsonl``: they are about to be produced again.
        tensorboard: write TensorBoard scalars when ``torch.utils.tensorboard`` imports.
        plot_interval_s: redraw ``curves.png`` after an epoch only when the last drawing is at
            least this old (drawing takes about a second on a small CPU); :meth:`close` always
            draws what is pending.
    """

    def __init__(self, out_dir: os.PathLike, enabled: bool = True, resume_step: int = 0,
                 tensorboard: bool = True, plot_interval_s: float = 30.0):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.steps_path = self.out_dir / "train_steps.jsonl"
        self.curves_path = self.out_dir / "curves.png"
        self.log_path = self.out_dir / "train.log"
        self.records: List[Dict[str, Any]] = []
        self.step_records: List[Dict[str, Any]] = []
        self._tb = None
        self.plot_interval_s = float(plot_interval_s)
        self._last_plot = time.monotonic()
        self._plot_pending = False
        self._bar: Any = _NoBar()
        self._warned: Set[Path] = set()
        self._tb_images_written = False
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.records = [r for r in read_metrics(self.metrics_path) if "summary" not in r and r.get("step", 0) <= resume_step]
        self._rewrite()
        self.step_records = [r for r in read_metrics(self.steps_path) if r.get("step", 0) <= resume_step]
        try:
            atomic_write_text(self.steps_path, "".join(json.dumps(r) + "\n" for r in self.step_records))
        except OSError as exc:  # the per-step losses only feed curves.png
            self._warn_unwritable(self.steps_path, exc)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: the JSONL and PNG are enough
                self._tb = None

    def _rewrite(self) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.records))

    def _append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl``; a failed write stops the run, naming the file."""
        try:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
                fh.flush()
        except OSError as exc:
            raise write_error(self.metrics_path, exc) from exc

    def _print(self, message: str) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)
        except ImportError:
            print(message, flush=True)

    def _warn_unwritable(self, path: Path, exc: BaseException) -> None:
        """Say once per file that a cosmetic file could not be written; training goes on."""
        if path in self._warned:
            return
        self._warned.add(path)
        errno_ = getattr(exc, "errno", None)
        reason = os.strerror(errno_) if errno_ else (str(exc).splitlines() or [type(exc).__name__])[0]
        message = (f"Warning: could not write {path} ({reason}); training goes on without it "
                   f"(the checkpoints and metrics.jsonl are still written).")
        if path == self.log_path:
            self._print(message)
        else:
            self.log(message)

    def _tensorboard(self, write: Callable[[Any], None]) -> None:
        """Run ``write(summary_writer)``; a failure (its writer thread re-raises disk errors)
        warns and turns TensorBoard off for the rest of the run."""
        if self._tb is None:
            return
        try:
            write(self._tb)
        except Exception as exc:  # any failure: TensorBoard is a convenience, never worth the run
            self._tb = None
            self._warn_unwritable(self.out_dir / "tensorboard", exc)

    def log(self, message: str) -> None:
        """Print a line (without breaking a progress bar) and append it to ``train.log``."""
        if not self.enabled:
            return
        self._print(message)
        self.append_log(message)

    def append_log(self, message: str) -> None:
        """Append ``message`` to ``train.log`` only (for text already shown, e.g. on stderr)."""
        if not self.enabled:
            return
        try:
            with open(self.log_path, "a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError as exc:  # the line is on stdout or stderr already
            self._warn_unwritable(self.log_path, exc)

    def progress_bar(self, run: Any, show: bool) -> Any:
        """A tqdm bar over the run's optimizer steps (a do-nothing bar when hidden)."""
        if self.enabled and show:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=run.schedule.total_steps, initial=run.step, desc="train", unit="step",
                             dynamic_ncols=True, mininterval=1.0, file=sys.stdout, leave=True)
        return self._bar

    def step_scalars(self, run: Any, window: Mapping[str, Any], bar: Any) -> None:
        """Every ``log_every_steps``: the mean losses since the last call to the bar and TensorBoard."""
        if not self.enabled:
            return
        if self._bar.__class__ is not _NoBar:
            self._bar.total = run.schedule.total_steps  # a time budget may have resized the run
            elapsed = run.clock.seconds["steps"] + run.clock.seconds["data_wait"]
            bar.set_postfix(loss=fmt_loss(window.get("main")), lr=f"{run.head_lr():.2e}",
                            img_s=f"{run.images_trained / max(elapsed, 1e-9):.1f}", refresh=False)
        record = {"step": run.step, "loss": window.get("loss"), "main_loss": window.get("main"), "lr": run.last_lr}
        self.step_records.append(record)
        if self.steps_path not in self._warned:
            try:
                with open(self.steps_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            except OSError as exc:  # curves.png then lacks these points; metrics.jsonl is intact
                self._warn_unwritable(self.steps_path, exc)
        self._tensorboard(lambda tb: self._tb_step_scalars(tb, record))

    @staticmethod
    def _tb_step_scalars(tb: Any, record: Mapping[str, Any]) -> None:
        for key in ("loss", "main_loss", "lr"):
            if record.get(key) is not None:
                tb.add_scalar(f"train/{key}", record[key], record["step"])

    @property
    def wants_images(self) -> bool:
        """Whether :meth:`validation` has somewhere to show example images (TensorBoard is on)."""
        return self.enabled and self._tb is not None

    def validation(self, record: Mapping[str, Any], run: Any, examples: Optional[Mapping[str, Any]] = None) -> None:
        """Append a validation record to ``metrics.jsonl``, log it, draw curves, TensorBoard.

        ``examples`` (from :func:`~engine.training.validation_pass.validation_examples`) adds a
        few validation images, their masks and the predictions to TensorBoard's image tab.
        """
        if not self.enabled:
            return
        record = dict(record)
        self.records.append(record)
        self._append_metrics(record)
        self._plot_pending = True
        if time.monotonic() - self._last_plot >= self.plot_interval_s:
            self.plot()
        img_s = run.images_trained / max(run.clock.seconds["steps"] + run.clock.seconds["data_wait"], 1e-9)
        self.log(
            f"Epoch {record['epoch']} step {record['step']}/{run.schedule.total_steps}: structure loss (main output) "
            f"train {fmt_loss(record['train_main_loss'])} val {fmt_loss(record['val_loss'])} | total train loss "
            f"{fmt_loss(record['train_loss'])} | S-measure {record['val_Sm']:.4f}  MAE {record['val_MAE']:.4f} "
            f"(n={record['val_n']}){'  * best' if record['is_best'] else ''} | {img_s:.1f} img/s while training"
        )
        if record.get("val_nonfinite"):
            self.log(f"Warning: {record['val_nonfinite']} validation image(s) had NaN/inf predictions (scored as 0.5).")
        if record.get("router"):
            self.log(router_line(record["router"]))
        self._tensorboard(lambda tb: self._tb_validation(tb, record))
        if examples is not None:
            self._tensorboard(lambda tb: self._tb_examples(tb, examples, record["step"]))

    def _tb_examples(self, tb: Any, examples: Mapping[str, Any], step: int) -> None:
        from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD

        if not self._tb_images_written:  # the inputs do not change: written once
            mean = examples["image"].new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = examples["image"].new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
            tb.add_images("val/images", (examples["image"] * std + mean).clamp(0, 1), step)
            tb.add_images("val/ground_truth", examples["mask"], step)
            self._tb_images_written = True
        tb.add_images("val/predictions", examples["pred"], step)
        tb.flush()

    @staticmethod
    def _tb_validation(tb: Any, record: Mapping[str, Any]) -> None:
        step = record["step"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "step"):
                tb.add_scalar(TENSORBOARD_NAMES.get(key, f"interval/{key}"), value, step)
        for layer, stats in (record.get("router") or {}).items():
            for expert, share in stats["share"].items():
                if share is not None:
                    tb.add_scalar(f"router/{layer}/{expert}", share, step)
            if stats.get("balance_loss") is not None:
                tb.add_scalar(f"router/{layer}/balance_loss", stats["balance_loss"], step)
        tb.flush()

    def summary(self, summary: Mapping[str, Any], status: str, step: int) -> None:
        """Where the wall time went: printed, appended to ``metrics.jsonl`` and written to
        ``run_summary.json``."""
        if not self.enabled:
            return
        self._bar.close()
        payload = {"status": status, "step": step, **summary}
        self._append_metrics({"summary": payload})
        atomic_write_text(self.out_dir / "run_summary.json", json.dumps(payload, indent=2) + "\n")
        total = max(summary["total_s"], 1e-9)
        parts = ", ".join(f"{k[:-2].replace('_', ' ')} {summary[k]:.1f} s ({100 * summary[k] / total:.0f}%)"
                          for k in ("startup_s", "data_wait_s", "steps_s", "validation_s", "checkpoints_s", "teardown_s",
                                    "other_s"))
        self.log(f"Wall time {summary['total_s']:.1f} s from launch: {parts}. {summary['images_trained']} images "
                 f"trained: {summary['images_per_wall_s']:.1f} img/s over the whole run (images / wall seconds, "
                 f"launch to exit).")

    def plot(self) -> None:
        """Redraw ``curves.png`` now (a failed write is a warning: the numbers are in metrics.jsonl)."""
        if self.enabled and self.records:
            try:
                plot_training_curves(self.records, self.curves_path, steps=self.step_records)
            except OSError as exc:
                self._warn_unwritable(self.curves_path, exc)
            self._plot_pending = False
            self._last_plot = time.monotonic()

    def close(self) -> None:
        """Draw pending curves and flush TensorBoard."""
        self._bar.close()
        if self._plot_pending:
            self.plot()
        self._tensorboard(lambda tb: tb.close())
        self._tb = None
