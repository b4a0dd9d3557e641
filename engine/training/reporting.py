"""What a run leaves behind for people: ``metrics.jsonl``, ``curves.png``, ``train.log``, TensorBoard.

Only rank 0 creates a :class:`RunReporter`; other ranks get a disabled one.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["RunReporter", "plot_curves", "read_metrics"]


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


def _series(records, key):
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(r["epoch"])
            ys.append(v)
    return xs, ys


def plot_curves(records: List[Mapping[str, Any]], path: os.PathLike) -> Optional[Path]:
    """Draw losses, validation S-measure/MAE and learning rate per epoch to a PNG.

    Returns:
        The path written, or None when matplotlib is missing or there is nothing to plot.
    """
    if not records:
        return None
    try:
        # The object API renders with Agg without pyplot, so a notebook's own backend and
        # figures are left alone and no display is needed.
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    # Main-output structure loss on both sides (the training total adds side and MoE terms).
    for key, label in (("train_main_loss", "train"), ("val_loss", "validation")):
        xs, ys = _series(records, key)
        if xs:
            axes[0].plot(xs, ys, marker="o", label=label)
    axes[0].set_title("structure loss (main output)")
    axes[0].legend()
    for key, label in (("val_Sm", "S-measure"), ("val_MAE", "MAE")):
        xs, ys = _series(records, key)
        if xs:
            axes[1].plot(xs, ys, marker="o", label=label)
    axes[1].set_title("validation (held-out training images)")
    axes[1].legend()
    xs, ys = _series(records, "lr")
    if xs:
        axes[2].plot(xs, ys, marker="o")
    axes[2].set_title("learning rate (last step of the epoch)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
    return path


class RunReporter:
    """Writes the per-epoch records and the human-readable log of one run.

    Args:
        out_dir: the checkpoint directory.
        enabled: False on ranks other than 0 (every method becomes a no-op).
        completed_epochs: on resume, records of later epochs (1-based) are dropped from
            ``metrics.jsonl``: they are about to be produced again.
        tensorboard: write TensorBoard scalars when ``torch.utils.tensorboard`` imports.
        plot_interval_s: redraw ``curves.png`` after an epoch only when the last drawing is at
            least this old (drawing takes about a second on a small CPU); :meth:`close` always
            draws what is pending.
    """

    def __init__(self, out_dir: os.PathLike, enabled: bool = True, completed_epochs: int = 0,
                 tensorboard: bool = True, plot_interval_s: float = 30.0):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.curves_path = self.out_dir / "curves.png"
        self.log_path = self.out_dir / "train.log"
        self.records: List[Dict[str, Any]] = []
        self._tb = None
        self.plot_interval_s = float(plot_interval_s)
        self._last_plot = time.monotonic()
        self._plot_pending = False
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.records = [r for r in read_metrics(self.metrics_path) if r.get("epoch", 0) <= completed_epochs]
        self._rewrite()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: the JSONL and PNG are enough
                self._tb = None

    def _rewrite(self) -> None:
        tmp = self.metrics_path.with_name(".metrics.jsonl.tmp")
        with open(tmp, "w") as fh:
            for r in self.records:
                fh.write(json.dumps(r) + "\n")
        os.replace(tmp, self.metrics_path)

    def log(self, message: str) -> None:
        """Print a line (without breaking a progress bar) and append it to ``train.log``."""
        if not self.enabled:
            return
        try:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)
        except ImportError:
            print(message, flush=True)
        with open(self.log_path, "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Per-step scalars (TensorBoard only)."""
        if self.enabled and self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)

    def epoch_end(self, record: Mapping[str, Any]) -> None:
        """Append one epoch's record to ``metrics.jsonl`` and redraw ``curves.png``."""
        if not self.enabled:
            return
        record = dict(record)
        self.records.append(record)
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        self._plot_pending = True
        if time.monotonic() - self._last_plot >= self.plot_interval_s:
            self.plot()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                    self._tb.add_scalar(f"epoch/{key}", value, record["epoch"])
            self._tb.flush()

    def plot(self) -> None:
        """Redraw ``curves.png`` now."""
        if self.enabled and self.records:
            plot_curves(self.records, self.curves_path)
            self._plot_pending = False
            self._last_plot = time.monotonic()

    def close(self) -> None:
        """Draw pending curves and flush TensorBoard."""
        if self._plot_pending:
            self.plot()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
