"""PNG figures of a run: training curves per epoch, and test-set PR / F-measure curves.

Figures are built with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``), never through
``pyplot`` or ``matplotlib.use``: the process-wide backend, a notebook's inline figures and
pyplot's figure list are left untouched, and no display is needed. Files are written atomically.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

from engine.files import PathLike, atomic_open

__all__ = ["new_figure", "plot_test_curves", "plot_training_curves", "save_png"]


def new_figure(width: float, height: float):
    """An empty matplotlib ``Figure`` of ``width`` x ``height`` inches on an Agg canvas (no pyplot).

    Raises:
        ImportError: matplotlib is not installed.
    """
    # Imported here: matplotlib is optional for training (the JSONL is enough) and slow to import.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attaches itself to the figure; savefig renders through it
    return fig


def _new_figure(width: float, height: float, ncols: int):
    fig = new_figure(width, height)
    return fig, fig.subplots(1, ncols)


def save_png(fig, path: PathLike, dpi: int) -> Path:
    """Render ``fig`` as PNG into ``path`` atomically (parent folders created).

    Raises:
        engine.files.FileWriteError: the file could not be written (read-only folder, full
            disk...), naming it; callers to whom the figure is cosmetic (the trainer's
            ``curves.png``) warn and go on.
    """
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    return Path(path)


def _series(records: List[Mapping[str, Any]], key: str) -> Tuple[List[float], List[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(r["epoch"])
            ys.append(v)
    return xs, ys


def _plot_labelled(ax, records, keys_labels, title: str) -> None:
    """One line per (record key, legend label) that has values, then the title and legend."""
    for key, label in keys_labels:
        xs, ys = _series(records, key)
        if xs:
            ax.plot(xs, ys, marker="o", label=label)
    ax.set_title(title)
    ax.legend()


def plot_training_curves(records: List[Mapping[str, Any]], path: PathLike) -> Optional[Path]:
    """Draw losses, validation S-measure/MAE and learning rate per epoch to a PNG.

    Args:
        records: ``metrics.jsonl`` records (``epoch`` plus ``train_main_loss``, ``val_loss``,
            ``val_Sm``, ``val_MAE``, ``lr``; missing or non-finite values are skipped).
        path: the PNG to write.

    Returns:
        The path written, or None when matplotlib is missing or there is nothing to plot.

    Raises:
        engine.files.FileWriteError: ``path`` could not be written (see :func:`save_png`).
    """
    if not records:
        return None
    try:
        fig, axes = _new_figure(15, 4, 3)
    except ImportError:
        return None
    # Main-output structure loss on both sides (the training total adds side and MoE terms).
    _plot_labelled(axes[0], records, (("train_main_loss", "train"), ("val_loss", "validation")),
                   "structure loss (main output)")
    _plot_labelled(axes[1], records, (("val_Sm", "S-measure"), ("val_MAE", "MAE")),
                   "validation (held-out training images)")
    xs, ys = _series(records, "lr")
    if xs:
        axes[2].plot(xs, ys, marker="o")
    axes[2].set_title("learning rate (last step of the epoch)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path, dpi=90)


def plot_test_curves(curves: Mapping[str, Mapping[str, Any]], path: PathLike) -> Optional[Path]:
    """Draw the PR curve and the F-measure-vs-threshold curve of every test set into one PNG.

    Args:
        curves: test-set name -> arrays ``precision``, ``recall``, ``thresholds``, ``fmeasure``
            (test sets without ``precision`` are left out).
        path: the PNG to write (parent folders created).

    Returns:
        The file written, or None when no test set has curves (nothing was scored).

    Raises:
        engine.files.FileWriteError: ``path`` could not be written (see :func:`save_png`).
    """
    with_curves = {n: c for n, c in curves.items() if c and "precision" in c}
    if not with_curves:
        return None
    fig, (ax_pr, ax_f) = _new_figure(11, 4.5, 2)
    for name, c in with_curves.items():
        ax_pr.plot(c["recall"], c["precision"], label=name)
        ax_f.plot(c["thresholds"], c["fmeasure"], label=f"{name} (max {c['fmeasure'].max():.3f})")
    ax_pr.set(xlabel="Recall", ylabel="Precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    ax_f.set(xlabel="Threshold", ylabel="F-measure (beta^2 = 0.3)", title="F-measure vs threshold",
             xlim=(0, 1), ylim=(0, 1.02))
    for ax in (ax_pr, ax_f):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=120)
