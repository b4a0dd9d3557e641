"""Score a model on one list of test samples with PySODMetrics, in sample order.

Each image is predicted (batched, optional TTA), its probability map resized to its ground
truth's native size on the device (the ground truth is never resized) and quantised to 8 bits;
that very map is scored, saved when asked, and handed to an optional sink (the figure of the
best and worst images collects its rows there, so no second pass is needed).
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import re
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from datasets import display_path, read_mask, write_image
from engine.evaluation.metrics import CODMetrics, score_image, to_uint8_gt
from engine.evaluation.sets import EvaluationError
from engine.inference.predictor import GuardedDataset, Predictor, collate_guarded
from engine.inference.preprocess import ResizedImages, inference_loader

__all__ = [
    "ImageSink",
    "ScoringOptions",
    "TestSetResult",
    "default_metric_workers",
    "evaluate_samples",
    "metric_pool",
    "safe_dirname",
]

# Called once per scored image, in sample order: (sample, prediction uint8 at GT size, GT uint8, scores).
ImageSink = Callable[[Any, np.ndarray, np.ndarray, Dict[str, Any]], None]

# Queued (prediction, GT) pairs when scoring in worker processes: keeps the workers busy and
# bounds the memory the queue holds.
MAX_PENDING = 32


@dataclass
class TestSetResult:
    """Scores of one test set.

    Attributes:
        name: test-set name (``COD10K``, ``CAMO``, ...).
        metrics: :meth:`engine.evaluation.metrics.CODMetrics.compute` output.
        curves: :meth:`engine.evaluation.metrics.CODMetrics.curves` output (empty when no image scored).
        skipped_no_mask: images of the set that have no ground-truth mask (not scored).
        prediction_dir: where its predictions were saved, if they were.
        skipped_files: ``(image, reason)`` of samples left out by ``--skip-bad-samples``
            (found by the check before inference or failing during it).
    """

    name: str
    metrics: Dict[str, Any]
    curves: Dict[str, np.ndarray] = field(default_factory=dict)
    skipped_no_mask: List[Path] = field(default_factory=list)
    prediction_dir: Optional[Path] = None
    skipped_files: List[Tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ScoringOptions:
    """How one test set is scored.

    Attributes:
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding images and masks.
        save_dir: write each scored prediction here as ``<stem>.png`` (8-bit, GT size).
        measures: passed to :class:`CODMetrics` (None: all).
        progress: show a progress bar.
        skip_bad: leave out samples whose files fail to load (listed in the result's
            ``skipped_files``) instead of failing.
    """

    batch_size: int = 8
    num_workers: int = 0
    save_dir: Optional[Path] = None
    measures: Optional[Sequence[str]] = None
    progress: bool = True
    skip_bad: bool = False


def safe_dirname(name: str) -> str:
    """A test-set name (from a folder name) made usable as one folder level."""
    return re.sub(r"[^\w.\-+]+", "_", name).strip("._") or "test"


def default_metric_workers(num_images: int) -> int:
    """Processes scoring images: PySODMetrics costs ~0.25 s per COD10K image on one core, far
    more than the forward pass, so large sets are scored in parallel; small ones in-process
    (starting workers costs a few seconds)."""
    if num_images < 100:
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def metric_pool(workers: int) -> Optional[Executor]:
    """A process pool for :func:`engine.evaluation.metrics.score_image`, or None for ``workers <= 0``.

    ``spawn`` rather than ``fork``: the parent holds CUDA and OpenMP threads, which a forked
    child must not inherit.
    """
    if workers <= 0:
        return None
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _read_gt(samples: Sequence[Any], index: int) -> Dict[str, Any]:
    # Native size, as an 8-bit map: exactly what an evaluation toolkit reading the file sees.
    return {"gt": to_uint8_gt(read_mask(samples[index].mask))}


def _describe(samples: Sequence[Any], index: int) -> str:
    s = samples[index]
    return f"{display_path(s.image)} (mask {display_path(s.mask)})"


class _Scorer:
    """Scores (prediction, GT) pairs in this process or a pool and adds them in sample order,
    so the numbers do not depend on the pool; each scored image then goes to the sink."""

    def __init__(self, metrics: CODMetrics, pool: Optional[Executor], bar: tqdm, sink: Optional[ImageSink]):
        self.metrics, self.pool, self.bar, self.sink = metrics, pool, bar, sink
        self.pending: deque = deque()  # (future, sample, pred, gt), oldest first

    def add(self, sample: Any, pred: np.ndarray, gt: np.ndarray) -> None:
        if self.pool is None:
            self._scored(score_image(pred, gt, self.metrics.measures), sample, pred, gt)
            return
        self.pending.append((self.pool.submit(score_image, pred, gt, self.metrics.measures), sample, pred, gt))
        self.drain(MAX_PENDING)

    def drain(self, limit: int = 0) -> None:
        while len(self.pending) > limit:
            future, sample, pred, gt = self.pending.popleft()
            self._scored(future.result(), sample, pred, gt)

    def cancel(self) -> None:
        for future, *_ in self.pending:
            future.cancel()

    def _scored(self, scores: Dict[str, Any], sample: Any, pred: np.ndarray, gt: np.ndarray) -> None:
        self.metrics.add(scores, sample.category)
        self.bar.update(1)
        if self.sink is not None:
            self.sink(sample, pred, gt, scores)


def _batch_failures(batch: Dict[str, Any], samples: Sequence[Any], name: str, skip_bad: bool) -> List[Tuple[Path, str]]:
    """The batch's unreadable samples as ``(image, reason)``; raises unless ``skip_bad``."""
    if batch["errors"] and not skip_bad:
        lines = "\n  ".join(msg for _, msg in batch["errors"])
        raise EvaluationError(
            f"Could not read {len(batch['errors'])} file(s) of test set {name}:\n  {lines}\n"
            f"Fix or remove them (the scores must cover the whole set)."
        )
    return [(Path(samples[index].image), message) for index, message in batch["errors"]]


def _score_batch(predictor: Predictor, batch: Dict[str, Any], samples: Sequence[Any], scorer: _Scorer,
                 out_dir: Optional[Path]) -> None:
    gts: List[np.ndarray] = batch["gt"]
    # Normalised, resized to each GT's size and quantised on the device: the maps
    # quantize_probability(resize_probability(...)) gives, one copy to the host per map.
    preds = [m.cpu().numpy() for m in predictor.masks(batch["image"], [g.shape for g in gts])]
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        sample = samples[int(batch["index"][i])]
        if out_dir is not None:
            # The saved file is the very map that is scored: re-scoring it reproduces the numbers.
            # write_image, not cv2.imwrite: names that are not UTF-8 crash imwrite.
            write_image(out_dir / f"{Path(sample.name).name}.png", pred)
        scorer.add(sample, pred, gt)


def evaluate_samples(
    predictor: Predictor,
    samples: Sequence[Any],
    img_size: Tuple[int, int],
    name: str = "test",
    options: Optional[ScoringOptions] = None,
    *,
    pool: Optional[Executor] = None,
    sink: Optional[ImageSink] = None,
    **overrides: Any,
) -> TestSetResult:
    """Score a model on one list of samples.

    Args:
        predictor: the model wrapped for (TTA) inference.
        samples: ``SampleRef``-like objects with ``image``, ``mask``, ``name``, ``category``.
        img_size: network input ``(height, width)``.
        name: the test set's name (progress bar, result).
        options: batch size, workers, where to save predictions... (None: the defaults).
        pool: score images in these worker processes (see :func:`metric_pool`); None scores
            them in this process. Results are gathered in sample order either way, so the
            numbers do not depend on it.
        sink: called with every scored image, in sample order (see :data:`ImageSink`).
        **overrides: fields of :class:`ScoringOptions` that replace those of ``options``.

    Raises:
        EvaluationError: an image or mask could not be read and ``skip_bad`` is False (naming them).
    """
    opts = replace(options or ScoringOptions(), **overrides)
    skipped = [Path(s.image) for s in samples if s.mask is None]
    samples = [s for s in samples if s.mask is not None]
    metrics = CODMetrics(opts.measures)
    out_dir = Path(opts.save_dir) if opts.save_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not samples:
        return TestSetResult(name, metrics.compute(), {}, skipped, out_dir)

    # Images only, masks read at native size: an image whose size differs from its mask is
    # still scored, its prediction resized to the mask as evaluation toolkits do.
    dataset = GuardedDataset(ResizedImages([s.image for s in samples], img_size),
                             describe=functools.partial(_describe, samples), extra=functools.partial(_read_gt, samples))
    loader = inference_loader(dataset, opts.batch_size, opts.num_workers, predictor.device,
                              functools.partial(collate_guarded, keep_as_list=("gt",)))
    bar = tqdm(total=len(samples), desc=f"{name}", unit="img", disable=not opts.progress, dynamic_ncols=True)
    scorer = _Scorer(metrics, pool, bar, sink)
    failed: List[Tuple[Path, str]] = []
    try:
        for batch in loader:
            failed += _batch_failures(batch, samples, name, opts.skip_bad)
            bar.update(len(batch["errors"]))
            if batch["size"]:
                _score_batch(predictor, batch, samples, scorer, out_dir)
        scorer.drain(0)
    finally:
        scorer.cancel()
        bar.close()
    curves = metrics.curves() if len(metrics) else {}
    return TestSetResult(name, metrics.compute(), curves, skipped, out_dir, failed)
