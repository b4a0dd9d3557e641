"""Evaluate a checkpoint on COD test sets with the metrics papers report.

For every test set found under the dataset paths, each image is run through the model (batched,
AMP on GPU, optional flip/multi-scale TTA), its probability map is resized to its ground truth's
native size (the ground truth is never resized) and scored with PySODMetrics, overall and per
COD10K super-/sub-class. Predictions can be saved as 8-bit PNGs, exactly the maps that were
scored, so any external toolkit run on them reproduces the numbers.
"""
from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import re
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from datasets import (
    DecodeCache,
    combine,
    discover_dataset,
    display_path,
    ensure_synthetic_dataset,
    read_mask,
    validate_samples,
    write_image,
)
from datasets.validation import SIZE_MISMATCH, TRUNCATED, UNREADABLE
from engine.inference.predictor import (
    GuardedDataset,
    Predictor,
    collate_guarded,
    default_num_workers,
    load_inference_model,
)
from engine.evaluation.metrics import RESULT_KEYS, CODMetrics, score_image, to_uint8_gt
from engine.inference.preprocess import ResizedImages, inference_loader
from datasets.leakage import leakage_warning
from engine.files import PathLike, atomic_open
from engine.plotting import plot_test_curves
from engine.runtime import resolve_device

__all__ = [
    "EvaluationError",
    "NoTestSetError",
    "TestSetResult",
    "evaluate_checkpoint",
    "evaluate_samples",
    "default_metric_workers",
    "check_test_set",
    "find_test_sets",
    "format_results_table",
    "results_to_json",
    "synthetic_test_root",
    "write_results_json",
]

class EvaluationError(RuntimeError):
    """A test set cannot be scored as asked (unreadable files); the message says which and why."""


class NoTestSetError(ValueError):
    """None of the dataset paths holds a test split with ground-truth masks."""


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


def _safe_dirname(name: str) -> str:
    # Test-set names come from folder names; keep them usable as one folder level.
    return re.sub(r"[^\w.\-+]+", "_", name).strip("._") or "test"


def find_test_sets(dataset_paths: Sequence[PathLike]) -> Tuple[Dict[str, list], List[str]]:
    """Discover the test sets under several dataset paths.

    Args:
        dataset_paths: dataset folders in any layout ``datasets.discover_dataset`` understands.

    Returns:
        ``(tests, notes)``: test sets by name (a clashing name gets a ``-2`` suffix) and
        human-readable notes, e.g. a path that has no test split.

    Raises:
        NoTestSetError: no path holds a test split.
        datasets.DatasetLayoutError: a path holds no understood layout.
    """
    found, notes = [], []
    for path in dataset_paths:
        splits = discover_dataset(path)
        tests = {k: v for k, v in splits.tests.items() if v}
        leak = leakage_warning(splits)
        if leak:
            notes.append(leak)
        if not tests and not splits.train:
            notes.append(f"{path}: the {splits.layout} layout was found but its folders hold no images; "
                         f"nothing to evaluate there. Put the images and their masks in them.")
            continue
        if not tests:
            notes.append(
                f"{path}: {splits.layout} layout with no test split ({len(splits.train)} training images only); "
                f"nothing to evaluate there. Point --dataset-path at a folder with Test/ (COD10K-v3), "
                f"TestDataset/<NAME>/ (SINet-V2) or an image+mask folder pair."
            )
            continue
        if splits.unusable:
            listing = "; ".join(f"{display_path(u.path)} ({u.reason})" for u in splits.unusable[:20])
            more = f"; ... and {len(splits.unusable) - 20} more" if len(splits.unusable) > 20 else ""
            notes.append(f"{path}: {len(splits.unusable)} image name(s) are no readable file and were left "
                         f"out: {listing}{more}. Point each link at the real file, or remove the entry.")
        found.append(splits)
    if not found:
        raise NoTestSetError(
            "No test set found: " + (" ".join(notes) if notes else "no dataset path given.")
        )
    merged = combine(found)
    return {name: list(samples) for name, samples in merged.tests.items() if samples}, notes


def check_test_set(
    name: str, samples: Sequence[Any], skip_bad: bool = False
) -> Tuple[List[Any], List[str], List[Tuple[Path, str]]]:
    """Check a test set's files, down to their pixel data, before spending time on inference.

    Args:
        name: the test set's name (for messages).
        samples: its samples.
        skip_bad: drop unreadable/truncated samples instead of failing.

    Returns:
        ``(usable samples, notes, skipped)``: ``skipped`` holds ``(image, reason)`` of the
        samples dropped.

    Raises:
        EvaluationError: unreadable or truncated files and ``skip_bad`` is False (every file named).
    """
    report = validate_samples(samples, check_sizes=True, decode=True, decode_cache=DecodeCache.default())
    broken = [p for p in report.problems if p.kind in (UNREADABLE, TRUNCATED)]
    notes: List[str] = []
    skipped: List[Tuple[Path, str]] = []
    if broken:
        listing = "\n  ".join(_problem_text(p) for p in broken[:50])
        more = f"\n  ... and {len(broken) - 50} more" if len(broken) > 50 else ""
        if not skip_bad:
            raise EvaluationError(
                f"Test set {name}: {len(broken)} unreadable or truncated file(s):\n  {listing}{more}\n"
                f"Fix them, or pass --skip-bad-samples to score the rest (the scores then do not cover "
                f"the whole set and are not comparable with published numbers)."
            )
        bad = {p.sample.image for p in broken if p.sample is not None}
        samples = [s for s in samples if s.image not in bad]
        skipped = [(p.sample.image, _problem_text(p)) for p in broken if p.sample is not None]
        notes.append(f"{name}: skipped {len(bad)} sample(s) with unreadable files (--skip-bad-samples); "
                     f"scores are over the remaining {len(samples)}.")
    mismatched = [p for p in report.problems if p.kind == SIZE_MISMATCH]
    if mismatched:
        notes.append(f"{name}: {len(mismatched)} image(s) differ in size from their mask (e.g. {mismatched[0].path.name}: "
                     f"{mismatched[0].detail}); their predictions are resized to the mask's size.")
    return list(samples), notes, skipped


def _problem_text(problem: Any) -> str:
    return f"{display_path(problem.path)}: {problem.detail or problem.kind} (fix: {problem.fix})"


def _read_gt(samples: Sequence[Any], index: int) -> Dict[str, Any]:
    # Native size, as an 8-bit map: exactly what an evaluation toolkit reading the file sees.
    return {"gt": to_uint8_gt(read_mask(samples[index].mask))}


def _describe(samples: Sequence[Any], index: int) -> str:
    s = samples[index]
    return f"{display_path(s.image)} (mask {display_path(s.mask)})"


def synthetic_test_root(run_config: Dict[str, Any], progress: bool = True) -> Path:
    """The built-in synthetic set a run trained on (``data.synthetic`` of its config), else the default one.

    Using the run's own parameters gives its held-out synthetic test split, never its training images.
    The set is generated in (or read from) this machine's cache (``$CAMOXPERT_CACHE`` or the default),
    never the ``cache_dir`` the checkpoint stored: a checkpoint does not choose where files are written.
    """
    data = run_config.get("data") if isinstance(run_config, dict) else None
    params = data.get("synthetic") if isinstance(data, dict) else None
    kwargs: Dict[str, Any] = {"progress": progress}
    if isinstance(params, dict):
        for key in ("n_train", "n_test", "img_size", "seed", "noncam_fraction"):
            if params.get(key) is not None:
                kwargs[key] = params[key]
    return ensure_synthetic_dataset(**kwargs)


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


def evaluate_samples(
    predictor: Predictor,
    samples: Sequence[Any],
    img_size: Tuple[int, int],
    name: str = "test",
    batch_size: int = 8,
    num_workers: int = 0,
    save_dir: Optional[PathLike] = None,
    measures: Optional[Sequence[str]] = None,
    progress: bool = True,
    pool: Optional[Executor] = None,
    skip_bad: bool = False,
) -> TestSetResult:
    """Score a model on one list of samples.

    Args:
        predictor: the model wrapped for (TTA) inference.
        samples: ``SampleRef``-like objects with ``image``, ``mask``, ``name``, ``category``.
        img_size: network input ``(height, width)``.
        name: the test set's name (progress bar, result).
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding images and masks.
        save_dir: write each scored prediction here as ``<stem>.png`` (8-bit, GT size).
        measures: passed to :class:`CODMetrics` (None: all).
        progress: show a progress bar.
        pool: score images in these worker processes (see :func:`metric_pool`); None scores
            them in this process. Results are gathered in sample order either way, so the
            numbers do not depend on it.
        skip_bad: leave out samples whose files fail to load (listed in the result's
            ``skipped_files``) instead of failing.

    Raises:
        EvaluationError: an image or mask could not be read and ``skip_bad`` is False (the
            message names the files).
    """
    skipped = [Path(s.image) for s in samples if s.mask is None]
    samples = [s for s in samples if s.mask is not None]
    metrics = CODMetrics(measures)
    out_dir = Path(save_dir) if save_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not samples:
        return TestSetResult(name, metrics.compute(), {}, skipped, out_dir)

    # Images only, masks read at native size below: an image whose size differs from its mask
    # is still scored, its prediction resized to the mask as evaluation toolkits do.
    dataset = GuardedDataset(
        ResizedImages([s.image for s in samples], img_size),
        describe=functools.partial(_describe, samples),
        extra=functools.partial(_read_gt, samples),
    )
    loader = inference_loader(dataset, batch_size, num_workers, predictor.device,
                              functools.partial(collate_guarded, keep_as_list=("gt",)))
    measure_groups = metrics.measures
    pending: deque = deque()  # (future, category), oldest first
    max_pending = 32  # queued (prediction, GT) pairs: keeps workers busy, bounds the memory they hold
    bar = tqdm(total=len(samples), desc=f"{name}", unit="img", disable=not progress, dynamic_ncols=True)

    def drain(limit: int) -> None:
        while len(pending) > limit:
            future, category = pending.popleft()
            metrics.add(future.result(), category)
            bar.update(1)

    failed: List[Tuple[Path, str]] = []
    try:
        for batch in loader:
            if batch["errors"] and skip_bad:
                failed += [(Path(samples[index].image), message) for index, message in batch["errors"]]
                bar.update(len(batch["errors"]))
            elif batch["errors"]:
                lines = "\n  ".join(msg for _, msg in batch["errors"])
                raise EvaluationError(
                    f"Could not read {len(batch['errors'])} file(s) of test set {name}:\n  {lines}\n"
                    f"Fix or remove them (the scores must cover the whole set)."
                )
            if not batch["size"]:
                continue
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
                if pool is None:
                    metrics.add(score_image(pred, gt, measure_groups), sample.category)
                    bar.update(1)
                else:
                    pending.append((pool.submit(score_image, pred, gt, measure_groups), sample.category))
                    drain(max_pending)
        drain(0)
    finally:
        for future, _ in pending:
            future.cancel()
        bar.close()
    curves = metrics.curves() if len(metrics) else {}
    return TestSetResult(name, metrics.compute(), curves, skipped, out_dir, failed)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def format_results_table(results: Dict[str, TestSetResult], per_category: bool = True) -> str:
    """A plain-text table: one row per test set (and per COD10K super-class under it).

    Sub-class scores are in the JSON only (COD10K has 69 of them).
    """
    keys = [k for k in RESULT_KEYS if any(k in r.metrics for r in results.values())]
    rows = [["Test set"] + keys]
    for name, res in results.items():
        rows.append([name] + [_fmt(res.metrics.get(k, float("nan"))) for k in keys])
        if per_category:
            for cls, m in res.metrics.get("per_category", {}).get("super_class", {}).items():
                rows.append([f"  {cls}"] + [_fmt(m.get(k, float("nan"))) for k in keys])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    # NaN/inf are not JSON: an empty group becomes null rather than an unparsable file.
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def results_to_json(results: Dict[str, TestSetResult]) -> Dict[str, Any]:
    """``{"<test set>": {"n", "Sm", ..., "MAE", "per_category": {...}}}`` (NaN written as null).

    A set with samples left out by ``--skip-bad-samples`` also gets ``"skipped_files"``:
    ``[{"path", "reason"}]``, so the file itself says its scores do not cover the whole set.
    """
    out = {}
    for name, res in results.items():
        entry = _json_safe(res.metrics)
        if res.skipped_files:
            entry["skipped_files"] = [{"path": display_path(p), "reason": r} for p, r in res.skipped_files]
        out[name] = entry
    return out


def write_results_json(results: Dict[str, TestSetResult], path: PathLike) -> Path:
    """Write :func:`results_to_json` to ``path`` (parent folders created)."""
    with atomic_open(path, "w") as fh:
        json.dump(results_to_json(results), fh, indent=2)
        fh.write("\n")
    return Path(path)


def evaluate_checkpoint(
    checkpoint: PathLike,
    dataset_paths: Sequence[PathLike] = (),
    *,
    output_json: Optional[PathLike] = None,
    save_predictions: Optional[PathLike] = None,
    curves_path: Optional[PathLike] = None,
    tta: bool = False,
    tta_scales: Sequence[float] = (1.0,),
    batch_size: int = 8,
    num_workers: Optional[int] = None,
    device: str = "auto",
    img_size: Optional[Any] = None,
    precision: str = "auto",
    metric_workers: Optional[int] = None,
    skip_bad_samples: bool = False,
    cuda_graphs: Optional[bool] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Dict[str, TestSetResult]:
    """Evaluate a checkpoint on every test set under ``dataset_paths``.

    Args:
        checkpoint: ``best.pt``/``last.pt`` written by ``train``.
        dataset_paths: dataset folders; empty evaluates on the built-in synthetic test set.
        output_json: write the scores here.
        save_predictions: write 8-bit PNG predictions at GT size to ``<dir>/<test set>/<stem>.png``.
        curves_path: PNG of PR and F-threshold curves; None writes ``<json stem>_curves.png``
            next to ``output_json``, else ``curves.png`` in ``save_predictions`` (no plot when
            neither is given).
        tta: average over horizontal flips.
        tta_scales: input scales to average over (``(1.0,)`` for none).
        batch_size: images per forward pass.
        num_workers: DataLoader workers (None: :func:`engine.inference.predictor.default_num_workers`).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        img_size: network input size; None uses the checkpoint's training size (or 384).
        precision: autocast policy (see :func:`engine.runtime.autocast_dtype`).
        metric_workers: processes scoring images (None: several for large sets, see
            :func:`default_metric_workers`; 0: in this process).
        skip_bad_samples: drop unreadable/truncated test samples instead of failing.
        cuda_graphs: replay CUDA graphs on GPUs (None: on); False runs the model eagerly.
        progress: show progress bars.
        log: where status lines go.

    Returns:
        Results by test-set name.

    Raises:
        engine.checkpoint.CheckpointError: missing, unsafe or foreign checkpoint.
        NoTestSetError: no dataset path holds a test split.
        datasets.DatasetLayoutError: a dataset path holds no understood layout.
        EvaluationError: unreadable test files (unless ``skip_bad_samples``).
    """
    dev = resolve_device(device)
    # The checkpoint first: a wrong path fails at once, before any dataset scan or synthetic generation.
    loaded = load_inference_model(checkpoint, dev, img_size)
    if dataset_paths:
        tests, notes = find_test_sets(dataset_paths)
    else:
        synthetic_root = synthetic_test_root(loaded.run_config, progress=progress)
        log(f"No --dataset-path given: evaluating on the built-in synthetic test set ({synthetic_root}).")
        tests, notes = find_test_sets([synthetic_root])
    skipped_before: Dict[str, List[Tuple[Path, str]]] = {}
    for name in list(tests):
        tests[name], set_notes, skipped_before[name] = check_test_set(name, tests[name], skip_bad_samples)
        notes.extend(set_notes)
    for note in notes:
        log(f"Note: {note}")

    # CUDA-graph replay on GPUs, as predict: the same kernels without their launch cost.
    predictor = Predictor(loaded.model, dev, hflip=tta, scales=tta_scales, precision=precision,
                          cuda_graphs=cuda_graphs)
    workers = default_num_workers(dev) if num_workers is None else int(num_workers)
    predictor.warm_up(batch_size, loaded.img_size)
    h, w = loaded.img_size
    tta_text = f", TTA: {'hflip' if tta else 'no flip'} x scales {list(predictor.scales)}" if predictor.num_views > 1 else ""
    log(
        f"Checkpoint {loaded.checkpoint} ({'EMA' if loaded.used_ema else 'model'} weights"
        f"{'' if loaded.epoch is None else f', epoch {loaded.epoch}'}) on {dev}, input {h}x{w}{tta_text}"
    )

    results: Dict[str, TestSetResult] = {}
    pred_root = Path(save_predictions) if save_predictions is not None else None
    total = sum(len(v) for v in tests.values())
    n_scorers = default_metric_workers(total) if metric_workers is None else int(metric_workers)
    pool = metric_pool(n_scorers)
    try:
        for name, samples in tests.items():
            save_dir = pred_root / _safe_dirname(name) if pred_root is not None else None
            res = evaluate_samples(
                predictor, samples, loaded.img_size, name=name, batch_size=batch_size,
                num_workers=workers, save_dir=save_dir, progress=progress, pool=pool, skip_bad=skip_bad_samples,
            )
            if res.skipped_files:
                log(f"Note: {name}: {len(res.skipped_files)} sample(s) failed to load during evaluation and were "
                    f"skipped (--skip-bad-samples):\n  " + "\n  ".join(r for _, r in res.skipped_files))
            res.skipped_files = skipped_before[name] + res.skipped_files
            if res.skipped_no_mask:
                log(f"Note: {name}: {len(res.skipped_no_mask)} image(s) without a ground-truth mask were not scored.")
            results[name] = res
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    log(format_results_table(results))
    if output_json is not None:
        log(f"Scores written to {write_results_json(results, output_json)}")
    if curves_path is None:
        if output_json is not None:
            curves_path = Path(output_json).with_name(f"{Path(output_json).stem}_curves.png")
        elif pred_root is not None:
            curves_path = pred_root / "curves.png"
    if curves_path is not None:
        written = plot_test_curves({n: r.curves for n, r in results.items()}, curves_path)
        if written is not None:
            log(f"PR and F-threshold curves written to {written}")
    if pred_root is not None:
        log(f"Predictions (8-bit PNG at ground-truth size) written under {pred_root}")
    return results
