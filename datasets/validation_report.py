"""What a dataset check found: the kinds of problem, the fix for each, and the report.

Every problem is a :class:`Problem` of one kind (``MISSING_MASK``, ``TRUNCATED``...)
with the path to fix. Kinds in :data:`ERROR_KINDS` make a sample unusable (or
leave nothing to train on); the others are warnings about files that belong to
no sample. :class:`ValidationReport` groups them by kind, each group with its
fix, and says which samples ``--skip-bad-samples`` would leave out. The checks
that fill it are in :mod:`datasets.validation`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

from .splits import DatasetSplits, SampleRef

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
]

MISSING_MASK = "missing_mask"
ORPHAN_MASK = "orphan_mask"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
SIZE_MISMATCH = "size_mismatch"
EMPTY_FOLDER = "empty_folder"
DUPLICATE_NAME = "duplicate_name"
NO_SAMPLES = "no_samples"
NOT_A_FILE = "not_a_file"

# One-line fix per problem kind, shown once per group in the report.
FIXES: Dict[str, str] = {
    MISSING_MASK: "add a mask with the same file stem to the mask folder, or remove the image",
    ORPHAN_MASK: "add the matching image or remove the mask (check for renamed files)",
    UNREADABLE: "re-download or re-export the file as PNG/JPEG, or remove the sample",
    TRUNCATED: "the file was cut short (interrupted copy or download): copy it again",
    SIZE_MISMATCH: "image and mask must have the same height and width: re-export the mask",
    EMPTY_FOLDER: "put the images/masks in this folder or point --dataset-path elsewhere",
    DUPLICATE_NAME: "two files share one stem; rename or remove one (only the first is used)",
    NO_SAMPLES: "check --dataset-path: no image/mask pairs were found",
    NOT_A_FILE: "point the link at the real file (or copy the file in), or remove or rename the entry",
}

# Kinds that make a sample unusable; the others are about files that belong
# to no sample and are reported but need no sample to be dropped.
_SAMPLE_KINDS = {MISSING_MASK, UNREADABLE, TRUNCATED, SIZE_MISMATCH}
# Errors stop training (a sample cannot be loaded, or there is nothing to
# train on); warnings (orphan masks, duplicate stems, empty folders, names
# that are no readable file) do not break loading but usually mean files went
# missing, so they are shown.
ERROR_KINDS = frozenset(_SAMPLE_KINDS | {NO_SAMPLES})

_TITLES = {
    MISSING_MASK: "Images without a mask",
    ORPHAN_MASK: "Masks without an image",
    UNREADABLE: "Unreadable or corrupt files",
    TRUNCATED: "Truncated files",
    SIZE_MISMATCH: "Image and mask sizes differ",
    EMPTY_FOLDER: "Empty folders",
    DUPLICATE_NAME: "Files sharing a stem",
    NO_SAMPLES: "No samples",
    NOT_A_FILE: "Image names that are no readable file",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        path: The offending file or folder.
        kind: One of the kind constants (``TRUNCATED``, ``MISSING_MASK``...).
        detail: What exactly is wrong with this file.
        sample: The sample the file belongs to, if any.
    """

    path: Path
    kind: str
    detail: str = ""
    sample: Optional[SampleRef] = None

    @property
    def fix(self) -> str:
        """One-line fix for this kind of problem."""
        return FIXES[self.kind]

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail or _TITLES[self.kind]} (fix: {self.fix})"


@dataclass
class ValidationReport:
    """Result of :func:`datasets.validation.validate_samples`.

    Attributes:
        problems: Every problem found, in dataset order.
        n_samples: Number of samples checked.
    """

    problems: List[Problem] = field(default_factory=list)
    n_samples: int = 0

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    @property
    def errors(self) -> List[Problem]:
        """Problems that make samples unusable (see :data:`ERROR_KINDS`)."""
        return [p for p in self.problems if p.kind in ERROR_KINDS]

    @property
    def warnings(self) -> List[Problem]:
        """Problems that do not stop loading: orphan masks, duplicate stems, empty folders."""
        return [p for p in self.problems if p.kind not in ERROR_KINDS]

    @property
    def has_errors(self) -> bool:
        """Whether any problem is an error."""
        return bool(self.errors)

    @property
    def bad_images(self) -> Set[Path]:
        """Image paths of the samples that cannot be used."""
        return {p.sample.image for p in self.problems if p.sample is not None and p.kind in _SAMPLE_KINDS}

    @property
    def n_usable(self) -> int:
        """Samples left once the unusable ones are dropped (what ``--skip-bad-samples`` trains on)."""
        return self.n_samples - len(self.bad_images)

    def by_kind(self) -> Dict[str, List[Problem]]:
        """Problems grouped by kind, in a fixed order."""
        groups: Dict[str, List[Problem]] = defaultdict(list)
        for problem in self.problems:
            groups[problem.kind].append(problem)
        order = list(_TITLES)
        return {k: groups[k] for k in sorted(groups, key=order.index)}

    def filter(self, samples: Iterable[SampleRef]) -> List[SampleRef]:
        """Drop the samples this report found unusable.

        Args:
            samples: Samples to filter (typically those that were validated).

        Returns:
            The usable samples, order kept.
        """
        bad = self.bad_images
        return [s for s in samples if s.image not in bad]

    def filter_splits(self, splits: DatasetSplits) -> DatasetSplits:
        """Copy of ``splits`` without the unusable samples (for ``--skip-bad-samples``).

        Args:
            splits: The validated splits.

        Returns:
            New splits; the lists of orphan masks, duplicates and empty folders
            are kept so they can still be shown.
        """
        return replace(
            splits,
            train=self.filter(splits.train),
            tests={name: self.filter(s) for name, s in splits.tests.items()},
        )

    def format(self, max_per_kind: Optional[int] = None, skipped: bool = False) -> str:
        """Readable multi-line report, grouped by kind, each group with its fix.

        Args:
            max_per_kind: Paths listed per kind before ``... and N more``;
                ``None`` (the default) lists all: the report is the one place
                that names every file to fix or remove.
            skipped: the unusable samples were already left out (``--skip-bad-samples``):
                the report says so instead of suggesting the option.

        Returns:
            The report text.
        """
        if self.ok:
            return f"Dataset check passed: {self.n_samples} samples, no problems."
        n_bad = len(self.bad_images)
        lines = [
            f"Dataset check: {len(self.errors)} error(s), {len(self.warnings)} warning(s) in "
            f"{self.n_samples} samples ({n_bad} sample(s) unusable):"
        ]
        for kind, problems in self.by_kind().items():
            severity = "error" if kind in ERROR_KINDS else "warning"
            lines.append("")
            lines.append(f"{severity}: {_TITLES[kind]} [{kind}]: {len(problems)}")
            lines.append(f"  fix: {FIXES[kind]}")
            shown = problems if max_per_kind is None else problems[:max_per_kind]
            for problem in shown:
                detail = f"  ({problem.detail})" if problem.detail else ""
                lines.append(f"  {problem.path}{detail}")
            if len(problems) > len(shown):
                lines.append(f"  ... and {len(problems) - len(shown)} more")
        if n_bad:
            lines.append("")
            if skipped:
                lines.append(f"Left out the {n_bad} unusable sample(s) (--skip-bad-samples); {self.n_usable} remain.")
            elif self.n_usable:
                lines.append(f"To train on the {self.n_usable} usable samples, pass --skip-bad-samples.")
            else:  # skipping would leave nothing: do not suggest it
                lines.append(f"No usable samples: all {self.n_samples} have errors, so --skip-bad-samples cannot "
                             f"help; fix or replace the files above.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


class DatasetValidationError(ValueError):
    """Raised when a dataset has problems; the message is the formatted report.

    Args:
        report: The failing report (kept as ``self.report``).
    """

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.format())
        self.report = report
