"""What discovery hands on: sample references, the splits of a data set, and merging them.

A :class:`SampleRef` says where one image and its mask live; :class:`DatasetSplits`
holds the training samples, the named test sets and the files discovery could not
pair (reported by :mod:`datasets.validation`); :func:`combine` merges the splits of
several dataset paths into one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ._types import PathLike
from .cod10k_names import Cod10kCategory, parse_cod10k_category
from .image_folders import UnusableEntry

__all__ = ["SampleRef", "DatasetSplits", "combine"]


@dataclass(frozen=True)
class SampleRef:
    """Where one sample lives on disk.

    Attributes:
        image: Path of the image file.
        mask: Path of the ground-truth mask, or ``None`` if none was found.
        name: File stem shared by image and mask (used to name predictions).
        category: COD10K category parsed from the name, ``None`` for other names.
    """

    image: Path
    mask: Optional[Path]
    name: str
    category: Optional[Cod10kCategory] = None

    @classmethod
    def from_paths(cls, image: PathLike, mask: Optional[PathLike] = None) -> "SampleRef":
        """Build a reference, deriving ``name`` and ``category`` from the image stem.

        Args:
            image: Image file path.
            mask: Mask file path, or ``None``.

        Returns:
            The sample reference.
        """
        image = Path(image)
        return cls(
            image=image,
            mask=None if mask is None else Path(mask),
            name=image.stem,
            category=parse_cod10k_category(image.stem),
        )


@dataclass
class DatasetSplits:
    """Samples found under one (or, after :func:`combine`, several) dataset paths.

    A ``pairs`` or ``collection`` folder declares no split of its own: its
    samples are put in ``train`` *and* in ``tests`` under the folder name, and
    the command picks the role (``train`` reads ``train`` through
    :meth:`for_training`, ``evaluate`` reads ``tests``). ``split_declared`` is
    false for them.

    COD10K ships masks only for its camouflaged images; a ``COD10K-NonCAM-*``
    image without a mask is left out of the samples (the usual protocol:
    3040 train and 2026 test images) and listed in ``skipped_noncam``. NonCAM
    images that do have a mask are kept.

    Attributes:
        train: Training samples.
        tests: Test sets by name (``"COD10K"``, ``"CAMO"``, ...).
        layout: Layout name, e.g. ``"COD10K-v3"``; ``"A+B"`` after combining.
        root: Dataset path that was discovered (the first one after combining).
        orphan_masks: Mask files with no image of the same stem.
        duplicates: Files skipped because another file in the folder has the
            same stem (``a.jpg`` next to ``a.png``).
        empty_dirs: Image or mask folders that exist but hold no image files.
        skipped_noncam: COD10K NonCAM images left out for having no mask.
        unusable: Names that look like images but are no readable file.
        split_declared: Whether the folders say which samples are for testing
            (false for ``pairs`` and ``collection`` folders).
    """

    train: List[SampleRef]
    tests: Dict[str, List[SampleRef]]
    layout: str
    root: Path
    orphan_masks: List[Path] = field(default_factory=list)
    duplicates: List[Path] = field(default_factory=list)
    empty_dirs: List[Path] = field(default_factory=list)
    skipped_noncam: List[Path] = field(default_factory=list)
    unusable: List[UnusableEntry] = field(default_factory=list)
    split_declared: bool = True

    def for_training(self) -> "DatasetSplits":
        """These splits as training data: without test sets when the folders declare none.

        A ``pairs`` folder's samples are listed both as ``train`` and as a test
        set; training on them and testing on the same images would report
        scores on seen data, so the test view is dropped here.

        Returns:
            ``self`` when the split is declared, else a copy with no test sets.
        """
        return self if self.split_declared else replace(self, tests={})

    def all_samples(self) -> List[SampleRef]:
        """Every sample of every split once, in train-then-test order.

        Returns:
            Samples de-duplicated by image path.
        """
        seen = set()
        out: List[SampleRef] = []
        for sample in [*self.train, *(s for t in self.tests.values() for s in t)]:
            if sample.image not in seen:
                seen.add(sample.image)
                out.append(sample)
        return out

    def summary(self) -> str:
        """One line such as ``COD10K-v3 at /data/COD10K-v3: train 3040, test COD10K 2026``."""
        tests = ", ".join(f"{name} {len(s)}" for name, s in self.tests.items()) or "none"
        text = f"{self.layout} at {self.root}: train {len(self.train)}, test {tests}"
        if self.skipped_noncam:
            text += f" ({len(self.skipped_noncam)} NonCAM images without masks left out)"
        return text


def combine(splits_list: Sequence[DatasetSplits]) -> DatasetSplits:
    """Merge the splits of several dataset paths.

    Train lists are concatenated; test sets are kept by name, a clashing name
    getting a ``-2``, ``-3``... suffix. A dataset root given twice is used once.

    Args:
        splits_list: Results of :func:`discover_dataset` / :func:`discover_pairs`.

    Returns:
        The merged splits (``layout`` joins the layout names with ``+``).

    Raises:
        ValueError: If ``splits_list`` is empty.
    """
    if not splits_list:
        raise ValueError("combine() needs at least one DatasetSplits.")
    seen_roots = set()
    unique: List[DatasetSplits] = []
    for splits in splits_list:
        key = (splits.layout, Path(splits.root).resolve())
        if key not in seen_roots:
            seen_roots.add(key)
            unique.append(splits)

    tests: Dict[str, List[SampleRef]] = {}
    for splits in unique:
        for name, samples in splits.tests.items():
            new_name, n = name, 2
            while new_name in tests:
                new_name, n = f"{name}-{n}", n + 1
            tests[new_name] = list(samples)
    layouts = list(dict.fromkeys(s.layout for s in unique))
    return DatasetSplits(
        train=[x for s in unique for x in s.train],
        tests=tests,
        layout="+".join(layouts),
        root=unique[0].root,
        orphan_masks=[p for s in unique for p in s.orphan_masks],
        duplicates=[p for s in unique for p in s.duplicates],
        empty_dirs=[p for s in unique for p in s.empty_dirs],
        skipped_noncam=[p for s in unique for p in s.skipped_noncam],
        unusable=[u for s in unique for u in s.unusable],
        split_declared=all(s.split_declared for s in unique),
    )
