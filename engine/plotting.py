"""PNG figures of a run: training curves per step, and test-set PR / F-measure curves.

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


def _series(records: List[Mapping[str, Any]], key: str, x: str = "step") -> Tuple[List[float], List[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and r.get(x) is not None:
            xs.append(r[x])
            ys.append(v)
    return xs, ys


def _plot_series(ax, records, key: str, label: str, **style) -> None:
    xs, ys = _series(records, key)
    if xs:
        ax.plot(xs, ys, label=label, **style)


def plot_training_curves(records: List[Mapping[str, Any]], path: PathLike,
                         steps: Optional[List[Mapping[str, Any]]] = None) -> Optional[Path]:
    """Draw the training loss at every logged step, the validation scores and the learning rate.

    Args:
        records: ``metrics.jsonl`` validation records (``step`` plus ``train_main_loss``,
            ``val_loss``, ``val_Sm``, ``val_MAE``, ``lr``; missing or non-finite values are skipped).
        path: the PNG to write.
        steps: ``train_steps.jsonl`` records (``step``, ``loss``, ``main_loss``, ``lr``), one per
            logged step; without them the training loss is drawn at the validations only.

    Returns:
        The path written, or None when matplotlib is missing or there is nothing to plot.

    Raises:
        engine.files.FileWriteError: ``path`` could not be written (see :func:`save_png`).
    """
    steps = list(steps or [])
    if not records and not steps:
        return None
    try:
        fig, axes = _new_figure(15, 4, 3)
    except ImportError:
        return None
    # Main-output structure loss on both sides (the training total adds side and MoE terms).
    if steps:
        _plot_series(axes[0], steps, "main_loss", "train (every logged step)", linewidth=1.0, alpha=0.8)
    else:
        _plot_series(axes[0], records, "train_main_loss", "train (mean since the last validation)", marker="o")
    _plot_series(axes[0], records, "val_loss", "validation", marker="o", linestyle="--")
    axes[0].set_title("structure loss (main output)")
    _plot_series(axes[1], records, "val_Sm", "S-measure", marker="o")
    _plot_series(axes[1], records, "val_MAE", "MAE", marker="o")
    axes[1].set_title("validation (held-out training images)")
    _plot_series(axes[2], steps if steps else records, "lr", "learning rate (head)",
                 **({} if steps else {"marker": "o"}))
    axes[2].set_title("learning rate")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
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
