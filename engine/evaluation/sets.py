"""Test sets to score: found under dataset paths, checked down to their pixels, or the built-in synthetic one."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from datasets import (
    DecodeCache,
    combine,
    discover_dataset,
    display_path,
    ensure_synthetic_dataset,
    validate_samples,
)
from datasets.leakage import leakage_warning
from datasets.validation import SIZE_MISMATCH, TRUNCATED, UNREADABLE
from engine.files import PathLike

__all__ = [
    "EvaluationError",
    "NoTestSetError",
    "check_test_set",
    "find_test_sets",
    "synthetic_test_root",
]


class EvaluationError(RuntimeError):
    """A test set cannot be scored as asked (unreadable files); the message says which and why."""


class NoTestSetError(ValueError):
    """None of the dataset paths holds a test split with ground-truth masks."""


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
