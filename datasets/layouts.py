"""Find image/mask pairs in the folder layouts COD datasets ship in.

Understood layouts (folder names are matched case-insensitively):

* ``COD10K-v3``: ``Train/Image`` + ``Train/GT_Object`` and ``Test/Image`` +
  ``Test/GT_Object`` (``GT_Edge`` and ``GT_Instance`` are ignored). The test
  set is called ``"COD10K"``. The same ``Train``/``Test`` split with any other
  mask folder name (``GT``, ``Mask``) is the ``train-test`` layout.
* ``SINet-V2``: ``TrainDataset/{Imgs,GT}`` and ``TestDataset/<NAME>/{Imgs,GT}``
  with one test set per ``<NAME>`` (CAMO, CHAMELEON, COD10K, NC4K, ...).
* ``pairs``: an image folder and a mask folder side by side, e.g.
  ``{Image,Mask}``, ``{Image,GT}``, ``{Imgs,GT}``, ``{im,gt}``.
* ``images-train-test`` (CAMO-V.1.0): ``Images/{Train,Test}`` next to one
  ``GT`` folder (or ``GT/{Train,Test}``).
* ``collection``: a folder whose sub-folders are ``pairs`` folders (pointing
  at a SINet-V2 ``TestDataset`` folder gives one test set per sub-folder).
* a wrapper folder holding exactly one of the above (as Kaggle and zip
  archives often add one level).

Test sets found in a single folder are named after it, shortened to the
benchmark name when the folder name starts with one (``CAMO-V.1.0-CVIU2019``
gives ``"CAMO"``; also CHAMELEON, COD10K, NC4K).

The built-in synthetic set (a COD10K-v3 tree holding the generator's
``synthetic.json`` manifest) is reported as layout and test set
``"synthetic"``, never as COD10K, so its scores cannot be mistaken for real ones.

Masks are matched to images by file stem. Files that cannot be paired are not
dropped silently: orphan masks, duplicate stems, empty folders and names that
look like images but are no readable file (broken or looping symbolic links,
folders named ``x.jpg``) are recorded on :class:`DatasetSplits` so that
:mod:`datasets.validation` can report them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ._types import PathLike

__all__ = [
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_NAME",
    "Cod10kCategory",
    "SampleRef",
    "UnusableEntry",
    "DatasetSplits",
    "DatasetLayoutError",
    "parse_cod10k_category",
    "is_image_file",
    "list_image_files",
    "scan_image_folder",
    "discover_pairs",
    "discover_dataset",
    "combine",
]


IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Folder names tried, in order of preference. GT_Object comes first so that a
# COD10K-v3 split folder (which also holds GT_Edge and GT_Instance) uses the
# object masks.
_IMAGE_DIR_NAMES = ("image", "images", "imgs", "img", "im")
_MASK_DIR_NAMES = ("gt_object", "gt", "gts", "mask", "masks")
_TRAIN_DIR_NAMES = ("train",)
_TEST_DIR_NAMES = ("test",)
# Folder names such as "CAMO-V.1.0-CVIU2019" or "NC4K_test" name their test
# set by the benchmark they hold, so result tables use the usual names.
_KNOWN_SETS = ("CHAMELEON", "COD10K", "CAMO", "NC4K")

# When two masks share a stem, prefer lossless formats: a JPEG mask has
# compression noise around the boundary.
_MASK_EXT_PREFERENCE = (".png", ".bmp", ".tif", ".tiff", ".webp", ".jpg", ".jpeg")
_IMAGE_EXT_PREFERENCE = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Written by datasets.synthetic at the root of every generated set.
_SYNTHETIC_MANIFEST = "synthetic.json"
_SYNTHETIC_GENERATOR = "camoxpert.synthetic"
SYNTHETIC_NAME = "synthetic"

_LAYOUT_HELP = (
    "  COD10K-v3   Train/Image + Train/GT_Object, Test/Image + Test/GT_Object\n"
    "  train-test  Train/{Image,GT|Mask}, Test/{Image,GT|Mask}\n"
    "  SINet-V2    TrainDataset/{Imgs,GT}, TestDataset/<NAME>/{Imgs,GT}\n"
    "  pairs       {Image,Mask}, {Image,GT}, {Imgs,GT}, {im,gt} directly in the folder\n"
    "  images-train-test  Images/{Train,Test} + GT (CAMO-V.1.0)\n"
    "  collection  sub-folders that are each a 'pairs' folder\n"
    "  pairs and collection folders declare no train/test split: `train` trains on them,\n"
    "  `evaluate` tests on them.\n"
    "  (folder names are case-insensitive; image files: "
    + ", ".join(IMAGE_EXTENSIONS)
    + ")"
)


class DatasetLayoutError(ValueError):
    """Raised when a dataset path does not hold any understood layout."""


@dataclass(frozen=True)
class Cod10kCategory:
    """Category encoded in a COD10K file name.

    ``COD10K-CAM-1-Aquatic-3-Flounder-11`` gives ``camouflaged=True``,
    ``super_class="Aquatic"`` (id 1) and ``sub_class="Flounder"`` (id 3).
    """

    camouflaged: bool
    super_class: Optional[str] = None
    sub_class: Optional[str] = None
    super_class_id: Optional[int] = None
    sub_class_id: Optional[int] = None


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


@dataclass(frozen=True)
class UnusableEntry:
    """A name in an image or mask folder that looks like an image but is no readable file.

    Attributes:
        path: The entry.
        reason: What it is instead (broken link, link loop, folder).
    """

    path: Path
    reason: str


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


# --------------------------------------------------------------------------- #
# COD10K categories
# --------------------------------------------------------------------------- #

# COD10K-<CAM|NonCAM>[-<superId>-<Super>[-<subId>-<Sub>]][-<rest>]
_COD10K_RE = re.compile(
    r"^COD10K-(?P<kind>CAM|NonCAM)"
    r"(?:-(?P<super_id>\d+)-(?P<super>[^-]*[A-Za-z][^-]*)"
    r"(?:-(?P<sub_id>\d+)-(?P<sub>[^-]*[A-Za-z][^-]*))?)?"
    r"(?:-.*)?$",
    re.IGNORECASE,
)


def parse_cod10k_category(name: str) -> Optional[Cod10kCategory]:
    """Parse the category out of a COD10K file name or stem.

    Args:
        name: File name or stem, e.g. ``"COD10K-CAM-1-Aquatic-3-Flounder-11.jpg"``.

    Returns:
        The category, or ``None`` if the name is not a COD10K name.
        Super and sub classes are ``None`` where the name does not carry them.
    """
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else Path(name).name
    match = _COD10K_RE.match(stem)
    if match is None:
        return None
    g = match.groupdict()
    return Cod10kCategory(
        camouflaged=g["kind"].lower() == "cam",
        super_class=g["super"],
        sub_class=g["sub"],
        super_class_id=None if g["super_id"] is None else int(g["super_id"]),
        sub_class_id=None if g["sub_id"] is None else int(g["sub_id"]),
    )


# --------------------------------------------------------------------------- #
# Folder scanning
# --------------------------------------------------------------------------- #


def is_image_file(path: PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _entry_kind(entry: os.DirEntry) -> Tuple[str, str]:
    """``("file" | "dir" | "unusable" | "other", reason)`` for a directory entry, links followed.

    A link loop makes ``is_file()`` raise ``ELOOP``; it is classified rather
    than let through, so one bad entry cannot abort a whole scan.
    """
    try:
        if entry.is_file():
            return "file", ""
        if entry.is_dir():
            return "dir", ""
    except OSError as exc:
        return "unusable", f"symbolic link loop ({exc.strerror})"
    if entry.is_symlink():
        try:
            target = os.readlink(entry.path)
        except OSError:
            target = "?"
        return "unusable", f"broken symbolic link (its target {target} does not exist)"
    return "other", ""


def _is_dir(entry: os.DirEntry) -> bool:
    return _entry_kind(entry)[0] == "dir"


def scan_image_folder(folder: PathLike) -> Tuple[List[Path], List[UnusableEntry]]:
    """Image files directly inside ``folder``, and the image names that are no readable file.

    Hidden files (``.DS_Store``, macOS ``._x.jpg`` resource forks) are skipped.

    Args:
        folder: Folder to list.

    Returns:
        ``(files, unusable)``: image paths sorted by name, and the entries
        with an image extension that are broken or looping symbolic links
        or folders (sorted by name).

    Raises:
        DatasetLayoutError: the folder cannot be listed (no permission).
    """
    files: List[Path] = []
    unusable: List[UnusableEntry] = []
    try:
        listing = os.scandir(folder)
    except PermissionError as exc:
        raise DatasetLayoutError(
            f"Cannot read the folder {folder}: permission denied. Make it readable (e.g. chmod -R a+rX {folder}) "
            f"or copy the data set to a folder you can read."
        ) from exc
    with listing as entries:
        for e in entries:
            if e.name.startswith(".") or not is_image_file(e.name):
                continue
            kind, reason = _entry_kind(e)
            if kind == "file":
                files.append(Path(e.path))
            elif kind == "dir":
                unusable.append(UnusableEntry(Path(e.path), "a folder, not an image file"))
            elif kind == "unusable":
                unusable.append(UnusableEntry(Path(e.path), reason))
    return sorted(files, key=lambda p: p.name), sorted(unusable, key=lambda u: u.path.name)


def list_image_files(folder: PathLike) -> List[Path]:
    """Image files directly inside ``folder``, sorted by name.

    Hidden files are skipped, and so are names that are no readable file
    (see :func:`scan_image_folder` to get those too).

    Args:
        folder: Folder to list.

    Returns:
        Sorted image paths; empty if the folder holds none.
    """
    return scan_image_folder(folder)[0]


def _child_dir(parent: Path, names: Sequence[str]) -> Optional[Path]:
    """First sub-folder of ``parent`` whose lower-cased name is in ``names`` (by preference)."""
    try:
        with os.scandir(parent) as entries:
            dirs = {e.name.lower(): Path(e.path) for e in entries if _is_dir(e)}
    except OSError:  # missing, not a folder, no permission, link loop
        return None
    for name in names:
        if name in dirs:
            return dirs[name]
    return None


def _subdirs(parent: Path) -> List[Path]:
    with os.scandir(parent) as entries:
        dirs = [Path(e.path) for e in entries if not e.name.startswith(".") and _is_dir(e)]
    return sorted(dirs, key=lambda p: p.name)


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
class _Scan:
    samples: List[SampleRef] = field(default_factory=list)
    orphan_masks: List[Path] = field(default_factory=list)
    duplicates: List[Path] = field(default_factory=list)
    empty_dirs: List[Path] = field(default_factory=list)
    skipped_noncam: List[Path] = field(default_factory=list)
    unusable: List[UnusableEntry] = field(default_factory=list)


def _scan_pair(image_dir: Optional[Path], mask_dir: Optional[Path]) -> _Scan:
    """Pair the images of ``image_dir`` with the masks of ``mask_dir`` by stem."""
    scan = _Scan()
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


def _find_pair_dirs(folder: Path) -> Optional[Tuple[Optional[Path], Optional[Path]]]:
    """``(image_dir, mask_dir)`` if ``folder`` is a pairs folder (either may be missing)."""
    image_dir = _child_dir(folder, _IMAGE_DIR_NAMES)
    mask_dir = _child_dir(folder, _MASK_DIR_NAMES)
    if image_dir is None and mask_dir is None:
        return None
    return image_dir, mask_dir


def _splits_from_scans(
    layout: str,
    root: Path,
    train: Optional[_Scan],
    tests: Dict[str, _Scan],
) -> DatasetSplits:
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


# --------------------------------------------------------------------------- #
# Layout detection
# --------------------------------------------------------------------------- #


def _detect_train_test(root: Path) -> Optional[DatasetSplits]:
    train_dir = _child_dir(root, _TRAIN_DIR_NAMES)
    test_dir = _child_dir(root, _TEST_DIR_NAMES)
    train_pair = _find_pair_dirs(train_dir) if train_dir is not None else None
    test_pair = _find_pair_dirs(test_dir) if test_dir is not None else None
    if train_pair is None and test_pair is None:
        return None
    mask_dirs = [p[1] for p in (train_pair, test_pair) if p is not None and p[1] is not None]
    is_cod10k = bool(mask_dirs) and all(d.name.lower() == "gt_object" for d in mask_dirs)
    layout, test_name = ("COD10K-v3", "COD10K") if is_cod10k else ("train-test", _test_set_name(root))
    train = _scan_pair(*train_pair) if train_pair is not None else None
    tests = {test_name: _scan_pair(*test_pair)} if test_pair is not None else {}
    return _splits_from_scans(layout, root, train, tests)


def _detect_sinet(root: Path) -> Optional[DatasetSplits]:
    train_dir = _child_dir(root, ("traindataset",))
    test_dir = _child_dir(root, ("testdataset",))
    if train_dir is None and test_dir is None:
        return None
    train_pair = _find_pair_dirs(train_dir) if train_dir is not None else None
    train = _scan_pair(*train_pair) if train_pair is not None else None
    tests: Dict[str, _Scan] = {}
    empty: List[Path] = []
    if test_dir is not None:
        for sub in _subdirs(test_dir):
            pair = _find_pair_dirs(sub)
            if pair is not None:
                tests[sub.name] = _scan_pair(*pair)
        if not tests:
            empty.append(test_dir)
    if train_dir is not None and train_pair is None:
        empty.append(train_dir)
    splits = _splits_from_scans("SINet-V2", root, train, tests)
    splits.empty_dirs.extend(empty)
    return splits


def _test_set_name(folder: Path) -> str:
    upper = folder.name.upper()
    for known in _KNOWN_SETS:
        if upper.startswith(known):
            return known
    return folder.name


def _detect_split_images(root: Path, image_dir: Path, mask_dir: Path) -> Optional[DatasetSplits]:
    """CAMO-V.1.0 style: ``Images/{Train,Test}`` next to one ``GT`` folder (or ``GT/{Train,Test}``)."""
    if list_image_files(image_dir):
        return None
    train_dir = _child_dir(image_dir, _TRAIN_DIR_NAMES)
    test_dir = _child_dir(image_dir, _TEST_DIR_NAMES)
    if train_dir is None and test_dir is None:
        return None
    train_masks = _child_dir(mask_dir, _TRAIN_DIR_NAMES) or mask_dir
    test_masks = _child_dir(mask_dir, _TEST_DIR_NAMES) or mask_dir
    train = _scan_pair(train_dir, train_masks) if train_dir is not None else None
    test = _scan_pair(test_dir, test_masks) if test_dir is not None else None
    tests = {_test_set_name(root): test} if test is not None else {}
    splits = _splits_from_scans("images-train-test", root, train, tests)
    if train is not None and test is not None and train_masks == test_masks:
        # One shared mask folder: a mask is an orphan only if neither split used it.
        shared = set(train.orphan_masks) & set(test.orphan_masks)
        splits.orphan_masks = sorted(shared, key=lambda p: p.name)
    return splits


def _detect_pairs(root: Path) -> Optional[DatasetSplits]:
    pair = _find_pair_dirs(root)
    if pair is None:
        return None
    if pair[0] is not None and pair[1] is not None:
        split = _detect_split_images(root, *pair)
        if split is not None:
            return split
    scan = _scan_pair(*pair)
    splits = _splits_from_scans("pairs", root, scan, {_test_set_name(root): scan})
    splits.split_declared = False
    return splits


def _is_synthetic(root: Path) -> bool:
    try:
        manifest = json.loads((root / _SYNTHETIC_MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("generator") == _SYNTHETIC_GENERATOR


def _detect_structured(root: Path) -> Optional[DatasetSplits]:
    for detect in (_detect_sinet, _detect_train_test, _detect_pairs):
        found = detect(root)
        if found is not None:
            if _is_synthetic(root):
                # Generated scenes with COD10K-style names: label them as what they are.
                found.layout = SYNTHETIC_NAME
                found.tests = {SYNTHETIC_NAME: s for s in found.tests.values()}
            return found
    return None


def discover_pairs(
    image_dir: PathLike, mask_dir: Optional[PathLike], name: Optional[str] = None
) -> DatasetSplits:
    """Pair an explicit image folder with an explicit mask folder.

    Args:
        image_dir: Folder of images.
        mask_dir: Folder of masks (matched by file stem), or ``None`` for none.
        name: Test-set name; defaults to the name of the folder holding
            ``image_dir`` (``CHAMELEON/Image`` gives ``"CHAMELEON"``).

    Returns:
        Splits with layout ``"pairs"``; the samples are both ``train`` and
        ``tests[name]``.

    Raises:
        DatasetLayoutError: If a folder does not exist.
    """
    image_dir = Path(image_dir)
    mask_path = None if mask_dir is None else Path(mask_dir)
    for folder in (image_dir, mask_path):
        if folder is not None and not folder.is_dir():
            raise DatasetLayoutError(f"{folder}: folder not found (check the path).")
    scan = _scan_pair(image_dir, mask_path)
    set_name = name or _test_set_name(image_dir.resolve().parent) or image_dir.name
    splits = _splits_from_scans("pairs", image_dir.parent, scan, {set_name: scan})
    splits.split_declared = False
    return splits


def discover_dataset(path: PathLike) -> DatasetSplits:
    """Find the samples of a dataset folder in any understood layout.

    Args:
        path: Dataset root, e.g. ``/kaggle/input/cod10k-dataset/COD10K-v3``.

    Returns:
        Train samples and named test sets (see :class:`DatasetSplits`).

    Raises:
        DatasetLayoutError: If the path is missing or holds no understood
            layout; the message lists the layouts understood.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetLayoutError(f"{root}: dataset path does not exist.")
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: dataset path is a file, expected a folder.")

    found = _detect_structured(root)
    if found is not None:
        return found

    # One level down: a folder of pairs folders (SINet-V2's TestDataset), or a
    # wrapper around exactly one dataset.
    children = [(sub, _detect_structured(sub)) for sub in _subdirs(root)]
    children = [(sub, s) for sub, s in children if s is not None]
    if children and all(s.layout == "pairs" for _, s in children) and len(children) > 1:
        tests = {}
        for sub, s in children:
            tests[sub.name] = s.train
        merged = DatasetSplits(
            train=[x for _, s in children for x in s.train],
            tests=tests,
            layout="collection",
            root=root,
            orphan_masks=[p for _, s in children for p in s.orphan_masks],
            duplicates=[p for _, s in children for p in s.duplicates],
            empty_dirs=[p for _, s in children for p in s.empty_dirs],
            skipped_noncam=[p for _, s in children for p in s.skipped_noncam],
            unusable=[u for _, s in children for u in s.unusable],
            split_declared=False,
        )
        return merged
    if len(children) == 1:
        return children[0][1]
    if children:
        names = ", ".join(f"{sub.name} ({s.layout})" for sub, s in children)
        raise DatasetLayoutError(
            f"{root}: holds several datasets ({names}); pass each one as its own "
            f"--dataset-path."
        )
    raise DatasetLayoutError(
        f"{root}: no dataset layout found. Layouts understood:\n{_LAYOUT_HELP}\n"
        f"For an image folder and a mask folder kept elsewhere, make a 'pairs' folder that "
        f"links to them and pass it:\n"
        f"  mkdir my_set && ln -s /path/to/images my_set/Image && ln -s /path/to/masks my_set/GT\n"
        f"  --dataset-path my_set"
    )


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
