"""Pair the images of one folder with the masks of another by file stem.

A *pairs folder* holds an image folder and a mask folder side by side
(``{Image,GT_Object}``, ``{Imgs,GT}``, ``{im,gt}``...). :func:`scan_pair` matches
their files by stem and keeps what does not match (orphan masks, duplicate
stems, empty folders, names that are no readable file) on the :class:`Scan`;
:func:`splits_from_scans` turns the scans of a layout into :class:`DatasetSplits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .image_folders import UnusableEntry, find_child_dir, scan_image_folder
from .splits import DatasetSplits, SampleRef

__all__ = ["Scan", "scan_pair", "find_pair_dirs", "splits_from_scans"]

# Folder names tried, in order of preference. GT_Object comes first so that a
# COD10K-v3 split folder (which also holds GT_Edge and GT_Instance) uses the
# object masks.
_IMAGE_DIR_NAMES = ("image", "images", "imgs", "img", "im")
_MASK_DIR_NAMES = ("gt_object", "gt", "gts", "mask", "masks")

# When two masks share a stem, prefer lossless formats: a JPEG mask has
# compression noise around the boundary.
_MASK_EXT_PREFERENCE = (".png", ".bmp", ".tif", ".tiff", ".webp", ".jpg", ".jpeg")
_IMAGE_EXT_PREFERENCE = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _by_stem(files: Iterable[Path], preference: Sequence[str]) -> Tuple[Dict[str, Path], List[Path]]:
    """Map stem -> file, keeping the preferred extension; also return the losers."""
    rank = {ext: i for i, ext in enumerate(preference)}
    ordered = sorted(files, key=lambda p: (p.stem, rank.get(p.suffix.lower(), len(rank)), p.name))
    chosen: Dict[str, Path] = {}
    duplicates: List[Path] = []
    for path in ordered:
        if path.stem in chosen:
            duplicates.append(path)
        else:
            chosen[path.stem] = path
    return chosen, duplicates


@dataclass
class Scan:
    """What :func:`scan_pair` found in one image folder and one mask folder.

    The attributes are those of :class:`DatasetSplits` of the same names;
    ``samples`` are the paired images.
    """

    samples: List[SampleRef] = field(default_factory=list)
    orphan_masks: List[Path] = field(default_factory=list)
    duplicates: List[Path] = field(default_factory=list)
    empty_dirs: List[Path] = field(default_factory=list)
    skipped_noncam: List[Path] = field(default_factory=list)
    unusable: List[UnusableEntry] = field(default_factory=list)


def scan_pair(image_dir: Optional[Path], mask_dir: Optional[Path]) -> Scan:
    """Pair the images of ``image_dir`` with the masks of ``mask_dir`` by stem."""
    scan = Scan()
    images, bad_images = scan_image_folder(image_dir) if image_dir is not None else ([], [])
    masks, bad_masks = scan_image_folder(mask_dir) if mask_dir is not None else ([], [])
    scan.unusable = bad_images + bad_masks
    for folder, files in ((image_dir, images), (mask_dir, masks)):
        if folder is not None and not files:
            scan.empty_dirs.append(folder)

    image_by_stem, dup_images = _by_stem(images, _IMAGE_EXT_PREFERENCE)
    mask_by_stem, dup_masks = _by_stem(masks, _MASK_EXT_PREFERENCE)
    scan.duplicates = dup_images + dup_masks
    # Fallback for stems that differ only in case (IMG_1.jpg vs img_1.png),
    # which happens when masks were made on a case-insensitive file system.
    mask_by_lower = {stem.lower(): stem for stem in mask_by_stem}

    used_masks = set()
    for stem in sorted(image_by_stem, key=lambda s: image_by_stem[s].name):
        mask_stem = stem if stem in mask_by_stem else mask_by_lower.get(stem.lower())
        mask = mask_by_stem.get(mask_stem) if mask_stem is not None else None
        if mask_stem is not None:
            used_masks.add(mask_stem)
        sample = SampleRef.from_paths(image_by_stem[stem], mask)
        if mask is None and sample.category is not None and not sample.category.camouflaged:
            scan.skipped_noncam.append(sample.image)
            continue
        scan.samples.append(sample)
    scan.orphan_masks = sorted(
        (p for stem, p in mask_by_stem.items() if stem not in used_masks), key=lambda p: p.name
    )
    return scan


def find_pair_dirs(folder: Path) -> Optional[Tuple[Optional[Path], Optional[Path]]]:
    """``(image_dir, mask_dir)`` if ``folder`` is a pairs folder (either may be missing)."""
    image_dir = find_child_dir(folder, _IMAGE_DIR_NAMES)
    mask_dir = find_child_dir(folder, _MASK_DIR_NAMES)
    if image_dir is None and mask_dir is None:
        return None
    return image_dir, mask_dir


def splits_from_scans(
    layout: str,
    root: Path,
    train: Optional[Scan],
    tests: Dict[str, Scan],
) -> DatasetSplits:
    """Splits of ``layout`` at ``root`` from the scans of its train folder and test sets.

    Args:
        layout: Layout name reported on the splits.
        root: Dataset path.
        train: Scan of the training folders, or ``None`` for no training samples.
        tests: Scans of the test sets by name (may hold ``train`` itself).

    Returns:
        The splits, with the problems of every distinct scan recorded once.
    """
    scans = ([train] if train is not None else []) + list(tests.values())
    # A pairs folder serves as train and test set: record its problems once.
    unique = list({id(s): s for s in scans}.values())
    return DatasetSplits(
        train=list(train.samples) if train is not None else [],
        tests={name: list(s.samples) for name, s in tests.items()},
        layout=layout,
        root=root,
        orphan_masks=[p for s in unique for p in s.orphan_masks],
        duplicates=[p for s in unique for p in s.duplicates],
        empty_dirs=[p for s in unique for p in s.empty_dirs],
        skipped_noncam=[p for s in unique for p in s.skipped_noncam],
        unusable=list({u.path: u for s in unique for u in s.unusable}.values()),
    )

