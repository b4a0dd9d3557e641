"""A picture of what a checkpoint does: its best and worst test images by S-measure.

:class:`Extremes` is an :data:`engine.evaluation.scoring.ImageSink`: it sees every scored image
once, during evaluation, and keeps only the few best and worst (their prediction and ground
truth), so a large test set costs no extra memory and no second pass. :func:`write_figure`
draws them as a grid, one row per image: the image, its ground truth, the prediction and the
prediction tinted on the image (:func:`engine.inference.predict.make_overlay`).
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from datasets import read_image
from engine.files import PathLike
from engine.inference.predict import make_overlay
from engine.plotting import new_figure, save_png

__all__ = ["CELL_INCHES", "COLUMNS", "DPI", "Extremes", "FigureRow", "figure_size_px", "write_figure"]

COLUMNS = ("image", "ground truth", "prediction", "overlay")
CELL_INCHES = 1.6  # width and height of one picture
TITLE_INCHES = 0.45  # above each row: its file name and S-measure (and the column names)
DPI = 80  # keeps a six-row figure of photographs in a few hundred kilobytes


@dataclass
class FigureRow:
    """One image of the figure.

    Attributes:
        test_set: the test set it belongs to.
        image: its image file.
        score: its S-measure.
        pred: the scored prediction, uint8 at the ground truth's size.
        gt: the ground truth, uint8 at its own size.
    """

    test_set: str
    image: Path
    score: float
    pred: np.ndarray
    gt: np.ndarray

    @property
    def title(self) -> str:
        return f"{self.test_set}: {self.image.name}   S-measure {self.score:.3f}"


class Extremes:
    """Keeps the best and worst scored images (by S-measure) seen during an evaluation.

    Args:
        rows: images to keep in all: ``ceil(rows / 2)`` best and ``rows // 2`` worst (every
            image when there are no more than ``rows``).
    """

    def __init__(self, rows: int):
        if rows < 1:
            raise ValueError(f"rows must be at least 1, got {rows}")
        self.n_best, self.n_worst = (rows + 1) // 2, rows // 2
        self._best: List[Tuple[float, int, FigureRow]] = []  # min-heap: the weakest of the best on top
        self._worst: List[Tuple[float, int, FigureRow]] = []  # min-heap of -score: the best of the worst on top
        self._order = itertools.count()  # ties keep arrival order, never compare arrays

    def sink(self, test_set: str):
        """The callback :func:`engine.evaluation.scoring.evaluate_samples` calls for ``test_set``."""
        def add(sample: Any, pred: np.ndarray, gt: np.ndarray, scores: Dict[str, Any]) -> None:
            self.add(FigureRow(test_set, Path(sample.image), float(scores["Sm"]), pred, gt))
        return add

    def add(self, row: FigureRow) -> None:
        """Offer one scored image."""
        seq = next(self._order)
        for heap, key, size in ((self._best, row.score, self.n_best), (self._worst, -row.score, self.n_worst)):
            if size:
                heapq.heappush(heap, (key, seq, row))
                if len(heap) > size:
                    heapq.heappop(heap)

    def rows(self) -> List[FigureRow]:
        """The kept images, best first (an image among both the best and the worst comes once)."""
        kept = {seq: row for _, seq, row in self._best + self._worst}
        return [kept[seq] for seq in sorted(kept, key=lambda s: (-kept[s].score, s))]


def figure_size_px(rows: int, dpi: int = DPI) -> Tuple[int, int]:
    """``(height, width)`` in pixels of the PNG :func:`write_figure` draws for ``rows`` images."""
    width, height = len(COLUMNS) * CELL_INCHES, rows * (CELL_INCHES + TITLE_INCHES)
    return round(height * dpi), round(width * dpi)


def _panels(row: FigureRow) -> List[np.ndarray]:
    image = read_image(row.image)
    h, w = row.gt.shape[:2]
    if image.shape[:2] != (h, w):  # shown at the ground truth's size, where the prediction was scored
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return [image, row.gt, row.pred, make_overlay(image, row.pred)]


def write_figure(rows: List[FigureRow], path: PathLike, dpi: int = DPI) -> Path:
    """Draw one row per image (image, ground truth, prediction, overlay) into a PNG.

    Args:
        rows: the images, top to bottom (e.g. :meth:`Extremes.rows`).
        path: the PNG to write, atomically (parent folders created).
        dpi: pixels per inch; the size is :func:`figure_size_px`.

    Returns:
        The file written.

    Raises:
        ValueError: ``rows`` is empty.
        engine.files.FileWriteError: ``path`` could not be written, naming it.
    """
    if not rows:
        raise ValueError("No scored image to draw.")
    fig = new_figure(len(COLUMNS) * CELL_INCHES, len(rows) * (CELL_INCHES + TITLE_INCHES))
    row_share = CELL_INCHES + TITLE_INCHES
    for subfig, row in zip(np.atleast_1d(fig.subfigures(len(rows), 1)), rows):
        subfig.suptitle(row.title, fontsize=8, y=0.98)
        subfig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - TITLE_INCHES / row_share, wspace=0.04)
        for ax, panel, name in zip(subfig.subplots(1, len(COLUMNS)), _panels(row), COLUMNS):
            gray = panel.ndim == 2
            ax.imshow(panel, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="antialiased")
            ax.set_title(name, fontsize=7, pad=2)
            ax.set_axis_off()
    return save_png(fig, path, dpi=dpi)
