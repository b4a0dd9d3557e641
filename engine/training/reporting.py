"""What a run leaves behind for people: ``metrics.jsonl``, ``curves.png``, ``train.log``, TensorBoard.

Only rank 0 creates a :class:`RunReporter`; other ranks get a disabled one.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping

from engine.files import atomic_write_text
from engine.plotting import plot_training_curves

__all__ = ["RunReporter", "read_metrics"]


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
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.records))

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
            plot_training_curves(self.records, self.curves_path)
            self._plot_pending = False
            self._last_plot = time.monotonic()

    def close(self) -> None:
        """Draw pending curves and flush TensorBoard."""
        if self._plot_pending:
            self.plot()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
