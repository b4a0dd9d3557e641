"""Check a dataset before training: every problem found in one pass, each with its fix.

Files are checked from their headers (see :mod:`datasets.probe`), so a few
thousand samples take about a second; ``decode=True`` adds a full decode of
every file for damage inside the pixel data (see :mod:`datasets.pixel_check`),
a few ms per file spread over worker processes. ``train`` and ``evaluate``
decode.

Not problems (the loaders handle them): grayscale, RGBA and 16-bit images,
anti-aliased masks, NonCAM images with all-black masks.

The checks are here; the problem kinds, their fixes and the report they fill
are :mod:`datasets.validation_report` (its names are importable from here too).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from .decode_cache import DecodeCache
from .image_folders import UnusableEntry
from .pixel_check import find_damaged
from .probe import ImageProbe, probe_image
from .splits import DatasetSplits, SampleRef
from .validation_report import (
    DUPLICATE_NAME,
    EMPTY_FOLDER,
    ERROR_KINDS,
    FIXES,
    MISSING_MASK,
    NO_SAMPLES,
    NOT_A_FILE,
    ORPHAN_MASK,
    SIZE_MISMATCH,
    TRUNCATED,
    UNREADABLE,
    DatasetValidationError,
    Problem,
    ValidationReport,
)

__all__ = [
    "MISSING_MASK",
    "ORPHAN_MASK",
    "UNREADABLE",
    "TRUNCATED",
    "SIZE_MISMATCH",
    "EMPTY_FOLDER",
    "DUPLICATE_NAME",
    "NO_SAMPLES",
    "NOT_A_FILE",
    "FIXES",
    "ERROR_KINDS",
    "Problem",
    "ValidationReport",
    "DatasetValidationError",
    "UnpairedFiles",
    "validate_samples",
    "validate_splits",
    "check_splits",
]

# A pair of header probes: the image's, and the mask's (None: the sample has no mask).
_Probes = Tuple[ImageProbe, Optional[ImageProbe]]


@dataclass(frozen=True)
class UnpairedFiles:
    """Files discovery found but could not make into samples; reported as warnings.

    Attributes:
        orphan_masks: Masks without an image.
        duplicates: Files skipped for sharing a stem.
        empty_dirs: Folders without images.
        unusable: Image names that are no readable file (broken or looping
            links, folders).
    """

    orphan_masks: Sequence[Path] = ()
    duplicates: Sequence[Path] = ()
    empty_dirs: Sequence[Path] = ()
    unusable: Sequence[UnusableEntry] = ()

    @classmethod
    def of(cls, splits: DatasetSplits) -> "UnpairedFiles":
        """What discovery recorded on ``splits`` as unpaired."""
        return cls(tuple(splits.orphan_masks), tuple(splits.duplicates), tuple(splits.empty_dirs),
                   tuple(splits.unusable))

    def folder_problems(self) -> List[Problem]:
        """The empty folders, reported before the samples."""
        return [Problem(Path(d), EMPTY_FOLDER, "folder holds no image files") for d in self.empty_dirs]

    def file_problems(self) -> List[Problem]:
        """Orphan masks, duplicate stems and unusable names, reported after the samples."""
        return ([Problem(Path(p), ORPHAN_MASK, "no image with this stem") for p in self.orphan_masks]
                + [Problem(Path(p), DUPLICATE_NAME, "another file has the same stem") for p in self.duplicates]
                + [Problem(u.path, NOT_A_FILE, u.reason) for u in self.unusable])


def _file_problems(probe: ImageProbe, sample: SampleRef) -> List[Problem]:
    if probe.ok:
        return []
    kind = TRUNCATED if probe.problem == "truncated" else UNREADABLE
    return [Problem(probe.path, kind, probe.detail, sample)]


def _probe_headers(samples: Sequence[SampleRef], num_threads: int, progress: bool) -> List[_Probes]:
    """Read the header of every image and mask, on threads (the work is file-system latency)."""

    def probe(sample: SampleRef) -> _Probes:
        return probe_image(sample.image), (probe_image(sample.mask) if sample.mask is not None else None)

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        return list(tqdm(pool.map(probe, samples), total=len(samples), desc="Checking dataset",
                         disable=not progress, unit="sample"))


def _mark_damaged(probes: List[_Probes], progress: bool, cache: Optional[DecodeCache]) -> List[_Probes]:
    """Decode every file whose header is sound; those that fail to decode become ``unreadable`` probes."""
    sound = [p.path for pair in probes for p in pair if p is not None and p.ok]
    with tqdm(total=len(sound), desc="Decoding dataset", disable=not progress, unit="file") as bar:
        damaged = find_damaged(sound, progress=bar.update, cache=cache)
    return [
        tuple(replace(p, problem="unreadable", detail=damaged[p.path])
              if p is not None and p.path in damaged else p for p in pair)
        for pair in probes
    ]


def _sample_problems(sample: SampleRef, probes: _Probes, check_sizes: bool) -> List[Problem]:
    """What is wrong with one sample: an unreadable image or mask, no mask, or sizes that differ."""
    image_probe, mask_probe = probes
    problems = _file_problems(image_probe, sample)
    if mask_probe is None:
        problems.append(Problem(sample.image, MISSING_MASK, f"no mask named {sample.name}.*", sample))
        return problems
    problems += _file_problems(mask_probe, sample)
    if check_sizes and image_probe.size and mask_probe.size and image_probe.size != mask_probe.size:
        (ih, iw), (mh, mw) = image_probe.size, mask_probe.size
        problems.append(Problem(
            sample.image, SIZE_MISMATCH,
            f"image {iw}x{ih}, mask {mw}x{mh} ({sample.mask.name})", sample,
        ))
    return problems


def validate_samples(
    samples: Sequence[SampleRef],
    check_sizes: bool = True,
    decode: bool = False,
    unpaired: Optional[UnpairedFiles] = None,
    progress: bool = False,
    num_threads: int = 8,
    decode_cache: Optional[DecodeCache] = None,
) -> ValidationReport:
    """Check samples and report every problem found, in one pass.

    Args:
        samples: Samples to check.
        check_sizes: Compare image and mask height/width.
        decode: Also decode every file fully (slower; catches damage inside
            the pixel data that headers cannot show).
        unpaired: Files discovery could not pair (orphan masks, duplicate
            stems, empty folders, names that are no readable file), reported
            as warnings; ``None`` for none.
        progress: Show a tqdm progress bar.
        num_threads: Threads reading headers; the work is file-system latency
            (network disks on Kaggle/Colab), which threads overlap.
        decode_cache: With ``decode``, files it records as unchanged since they
            last decoded cleanly are not decoded again (see
            :class:`datasets.DecodeCache`); None decodes every file.

    Returns:
        The report; ``report.ok`` is ``True`` if nothing was found.
    """
    samples = list(samples)
    unpaired = unpaired if unpaired is not None else UnpairedFiles()
    probes = _probe_headers(samples, num_threads, progress)
    if decode:
        probes = _mark_damaged(probes, progress, decode_cache)
    problems = unpaired.folder_problems()
    for sample, pair in zip(samples, probes):
        problems += _sample_problems(sample, pair, check_sizes)
    problems += unpaired.file_problems()
    return ValidationReport(problems=problems, n_samples=len(samples))

def validate_splits(
    splits: DatasetSplits,
    check_sizes: bool = True,
    decode: bool = False,
    progress: bool = False,
    decode_cache: Optional[DecodeCache] = None,
) -> ValidationReport:
    """Check every sample of ``splits`` plus the files discovery could not pair.

    Args:
        splits: Result of :func:`datasets.discover_dataset` or :func:`datasets.combine`.
        check_sizes: Compare image and mask height/width.
        decode: Also decode every file fully.
        progress: Show a tqdm progress bar.
        decode_cache: Skips re-decoding unchanged sound files (see :func:`validate_samples`).

    Returns:
        The report. A dataset with no samples at all gets a ``no_samples``
        problem naming its root.
    """
    samples = splits.all_samples()
    report = validate_samples(
        samples,
        check_sizes=check_sizes,
        decode=decode,
        unpaired=UnpairedFiles.of(splits),
        progress=progress,
        decode_cache=decode_cache,
    )
    if not samples:
        report.problems.insert(0, Problem(Path(splits.root), NO_SAMPLES, "no image/mask pairs found"))
    return report


def check_splits(
    splits: DatasetSplits,
    skip_bad_samples: bool = False,
    part: str = "all",
    check_sizes: bool = True,
    decode: bool = False,
    progress: bool = False,
    decode_cache: Optional[DecodeCache] = None,
) -> Tuple[DatasetSplits, ValidationReport]:
    """Validate before training or evaluating: stop on errors, or drop the bad samples.

    Args:
        splits: Discovered splits.
        skip_bad_samples: Drop unusable samples instead of raising.
        part: ``"train"`` checks only the training samples (a damaged test
            image should not stop training), ``"tests"`` only the test sets,
            ``"all"`` both. Orphan masks, duplicates and empty folders are
            reported in every case.
        check_sizes: Compare image and mask height/width.
        decode: Also decode every file fully.
        progress: Show a tqdm progress bar.
        decode_cache: Skips re-decoding unchanged sound files (see :func:`validate_samples`).

    Returns:
        ``(splits, report)``: the usable splits (filtered when
        ``skip_bad_samples``) and the full report, whose warnings (and, when
        skipping, errors) the caller should show.

    Raises:
        DatasetValidationError: If there are errors and ``skip_bad_samples`` is
            false, or if skipping leaves no sample in the checked part.
        ValueError: For an unknown ``part``.
    """
    parts = {"all": splits, "train": replace(splits, tests={}), "tests": replace(splits, train=[])}
    if part not in parts:
        raise ValueError(f"part={part!r}; use one of {sorted(parts)}.")
    report = validate_splits(parts[part], check_sizes=check_sizes, decode=decode, progress=progress,
                             decode_cache=decode_cache)
    if not report.has_errors:
        return splits, report
    if not skip_bad_samples:
        raise DatasetValidationError(report)
    filtered = report.filter_splits(splits)
    checked = replace(filtered, tests={}) if part == "train" else (
        replace(filtered, train=[]) if part == "tests" else filtered)
    if not checked.train and not any(checked.tests.values()):
        raise DatasetValidationError(report)
    return filtered, report
