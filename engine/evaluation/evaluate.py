"""Evaluate a checkpoint on COD test sets with the metrics papers report.

For every test set found under the dataset paths (:mod:`engine.evaluation.sets`), each image is
run through the model and scored with PySODMetrics (:mod:`engine.evaluation.scoring`), overall
and per COD10K super-/sub-class; the scores go to a table and JSON
(:mod:`engine.evaluation.report`), the PR curves and the best/worst figure
(:mod:`engine.evaluation.figure`) to PNGs. Predictions can be saved as 8-bit PNGs, exactly the
maps that were scored, so any external toolkit run on them reproduces the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from engine.evaluation.figure import Extremes, write_figure
from engine.evaluation.report import format_results_table, results_to_json, write_results_json
from engine.evaluation.scoring import (
    ScoringOptions,
    TestSetResult,
    default_metric_workers,
    evaluate_samples,
    metric_pool,
    safe_dirname,
)
from engine.evaluation.sets import (
    EvaluationError,
    NoTestSetError,
    check_test_set,
    find_test_sets,
    synthetic_test_root,
)
from engine.files import PathLike
from engine.inference.options import InferenceOptions
from engine.inference.predictor import Predictor, default_num_workers, load_inference_model
from engine.plotting import plot_test_curves
from engine.runtime import resolve_device

__all__ = [
    "EvaluateOptions",
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

Log = Callable[[str], None]
TestSets = Dict[str, list]
Skipped = Dict[str, List[Tuple[Path, str]]]


@dataclass(frozen=True)
class EvaluateOptions(InferenceOptions):
    """What :func:`evaluate_checkpoint` writes and scores, besides how the model runs (the fields of
    :class:`~engine.inference.options.InferenceOptions`): the ``evaluate`` command's options.

    Attributes:
        output_json: write the scores here.
        save_predictions: write 8-bit PNG predictions at GT size to ``<dir>/<test set>/<stem>.png``.
        curves_path: PNG of PR and F-threshold curves; None writes ``<json stem>_curves.png``
            next to ``output_json``, else ``curves.png`` in ``save_predictions`` (no plot when
            neither is given).
        figure: PNG of the best and worst images by S-measure (image, ground truth,
            prediction, overlay); None draws none.
        figure_rows: images in ``figure``: half of them the best, half the worst.
        metric_workers: processes scoring images (None: several for large sets, see
            :func:`default_metric_workers`; 0: in this process).
        skip_bad_samples: drop unreadable/truncated test samples instead of failing.
        cuda_graphs: replay CUDA graphs on GPUs (None: on); False runs the model eagerly.
    """

    output_json: Optional[PathLike] = None
    save_predictions: Optional[PathLike] = None
    curves_path: Optional[PathLike] = None
    figure: Optional[PathLike] = None
    figure_rows: int = 6
    metric_workers: Optional[int] = None
    skip_bad_samples: bool = False
    cuda_graphs: Optional[bool] = None

    def resolved_curves_path(self) -> Optional[Path]:
        """Where the PR curves go: ``curves_path``, else next to the JSON, else with the predictions."""
        if self.curves_path is not None:
            return Path(self.curves_path)
        if self.output_json is not None:
            return Path(self.output_json).with_name(f"{Path(self.output_json).stem}_curves.png")
        if self.save_predictions is not None:
            return Path(self.save_predictions) / "curves.png"
        return None


def _test_sets(dataset_paths: Sequence[PathLike], run_config: Dict[str, Any], opts: EvaluateOptions,
               log: Log) -> Tuple[TestSets, Skipped]:
    """The test sets to score, checked; notes logged; samples dropped by the check by set."""
    if dataset_paths:
        tests, notes = find_test_sets(dataset_paths)
    else:
        synthetic_root = synthetic_test_root(run_config, progress=opts.progress)
        log(f"No --dataset-path given: evaluating on the built-in synthetic test set ({synthetic_root}).")
        tests, notes = find_test_sets([synthetic_root])
    skipped: Skipped = {}
    for name in list(tests):
        tests[name], set_notes, skipped[name] = check_test_set(name, tests[name], opts.skip_bad_samples)
        notes.extend(set_notes)
    for note in notes:
        log(f"Note: {note}")
    return tests, skipped


def _predictor(loaded: Any, dev: Any, opts: EvaluateOptions, log: Log) -> Predictor:
    # CUDA-graph replay on GPUs, as predict: the same kernels without their launch cost.
    predictor = Predictor(loaded.model, dev, hflip=opts.tta, scales=opts.tta_scales, precision=opts.precision,
                          cuda_graphs=opts.cuda_graphs)
    predictor.warm_up(opts.batch_size, loaded.img_size)
    h, w = loaded.img_size
    tta_text = (f", TTA: {'hflip' if opts.tta else 'no flip'} x scales {list(predictor.scales)}"
                if predictor.num_views > 1 else "")
    log(
        f"Checkpoint {loaded.checkpoint} ({'EMA' if loaded.used_ema else 'model'} weights"
        f"{'' if loaded.epoch is None else f', epoch {loaded.epoch}'}) on {dev}, input {h}x{w}{tta_text}"
    )
    return predictor


def _log_left_out(res: TestSetResult, log: Log) -> None:
    if res.skipped_files:
        log(f"Note: {res.name}: {len(res.skipped_files)} sample(s) failed to load during evaluation and were "
            f"skipped (--skip-bad-samples):\n  " + "\n  ".join(r for _, r in res.skipped_files))
    if res.skipped_no_mask:
        log(f"Note: {res.name}: {len(res.skipped_no_mask)} image(s) without a ground-truth mask were not scored.")


def _score_all(predictor: Predictor, loaded: Any, tests: TestSets, skipped: Skipped, opts: EvaluateOptions,
               extremes: Optional[Extremes], log: Log) -> Dict[str, TestSetResult]:
    """Score every test set, sharing one pool of metric processes."""
    workers = default_num_workers(predictor.device) if opts.num_workers is None else int(opts.num_workers)
    scoring = ScoringOptions(batch_size=opts.batch_size, num_workers=workers, progress=opts.progress,
                             skip_bad=opts.skip_bad_samples)
    pred_root = Path(opts.save_predictions) if opts.save_predictions is not None else None
    total = sum(len(v) for v in tests.values())
    n_scorers = default_metric_workers(total) if opts.metric_workers is None else int(opts.metric_workers)
    pool = metric_pool(n_scorers)
    results: Dict[str, TestSetResult] = {}
    try:
        for name, samples in tests.items():
            save_dir = pred_root / safe_dirname(name) if pred_root is not None else None
            res = evaluate_samples(predictor, samples, loaded.img_size, name, replace(scoring, save_dir=save_dir),
                                   pool=pool, sink=extremes.sink(name) if extremes is not None else None)
            _log_left_out(res, log)
            res.skipped_files = skipped[name] + res.skipped_files
            results[name] = res
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def _write_outputs(results: Dict[str, TestSetResult], opts: EvaluateOptions, extremes: Optional[Extremes],
                   log: Log) -> None:
    """The table on screen, then the JSON, the curves and the figure where asked."""
    log(format_results_table(results))
    if opts.output_json is not None:
        log(f"Scores written to {write_results_json(results, opts.output_json)}")
    curves_path = opts.resolved_curves_path()
    if curves_path is not None:
        written = plot_test_curves({n: r.curves for n, r in results.items()}, curves_path)
        if written is not None:
            log(f"PR and F-threshold curves written to {written}")
    if extremes is not None and opts.figure is not None:
        rows = extremes.rows()
        if rows:
            log(f"Best and worst {len(rows)} image(s) by S-measure drawn in {write_figure(rows, opts.figure)}")
        else:
            log("Note: no image was scored, so no figure was drawn.")
    if opts.save_predictions is not None:
        log(f"Predictions (8-bit PNG at ground-truth size) written under {opts.save_predictions}")


def evaluate_checkpoint(
    checkpoint: PathLike,
    dataset_paths: Sequence[PathLike] = (),
    options: Optional[EvaluateOptions] = None,
    *,
    log: Log = print,
    **overrides: Any,
) -> Dict[str, TestSetResult]:
    """Evaluate a checkpoint on every test set under ``dataset_paths``.

    Args:
        checkpoint: ``best.pt``/``last.pt`` written by ``train``.
        dataset_paths: dataset folders; empty evaluates on the built-in synthetic test set.
        options: what to write and how to run (None: the defaults).
        log: where status lines go.
        **overrides: fields of :class:`EvaluateOptions` that replace those of ``options``
            (e.g. ``device="cpu", metric_workers=0``).

    Returns:
        Results by test-set name.

    Raises:
        engine.checkpoint.CheckpointError: missing, unsafe or foreign checkpoint.
        NoTestSetError: no dataset path holds a test split.
        datasets.DatasetLayoutError: a dataset path holds no understood layout.
        EvaluationError: unreadable test files (unless ``skip_bad_samples``).
        engine.files.FileWriteError: an output file could not be written.
    """
    opts = replace(options or EvaluateOptions(), **overrides)
    dev = resolve_device(opts.device)
    # The checkpoint first: a wrong path fails at once, before any dataset scan or synthetic generation.
    loaded = load_inference_model(checkpoint, dev, opts.img_size)
    tests, skipped = _test_sets(dataset_paths, loaded.run_config, opts, log)
    predictor = _predictor(loaded, dev, opts, log)
    extremes = Extremes(opts.figure_rows) if opts.figure is not None else None
    results = _score_all(predictor, loaded, tests, skipped, opts, extremes, log)
    _write_outputs(results, opts, extremes, log)
    return results
