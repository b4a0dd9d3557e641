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

Pairing images with masks is :mod:`datasets.pairing`, listing a folder
:mod:`datasets.image_folders`; the result types are in :mod:`datasets.splits`
and the COD10K name scheme in :mod:`datasets.cod10k_names`. Their public names
are importable from here as well.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from ._types import PathLike
from .cod10k_names import Cod10kCategory, parse_cod10k_category
from .image_folders import (
    IMAGE_EXTENSIONS,
    DatasetLayoutError,
    UnusableEntry,
    find_child_dir,
    is_image_file,
    list_image_files,
    list_subdirs,
    scan_image_folder,
)
from .pairing import Scan, find_pair_dirs, scan_pair, splits_from_scans
from .splits import DatasetSplits, SampleRef, combine

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


_TRAIN_DIR_NAMES = ("train",)
_TEST_DIR_NAMES = ("test",)
# Folder names such as "CAMO-V.1.0-CVIU2019" or "NC4K_test" name their test
# set by the benchmark they hold, so result tables use the usual names.
_KNOWN_SETS = ("CHAMELEON", "COD10K", "CAMO", "NC4K")

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


def _detect_train_test(root: Path) -> Optional[DatasetSplits]:
    train_dir = find_child_dir(root, _TRAIN_DIR_NAMES)
    test_dir = find_child_dir(root, _TEST_DIR_NAMES)
    train_pair = find_pair_dirs(train_dir) if train_dir is not None else None
    test_pair = find_pair_dirs(test_dir) if test_dir is not None else None
    if train_pair is None and test_pair is None:
        return None
    mask_dirs = [p[1] for p in (train_pair, test_pair) if p is not None and p[1] is not None]
    is_cod10k = bool(mask_dirs) and all(d.name.lower() == "gt_object" for d in mask_dirs)
    layout, test_name = ("COD10K-v3", "COD10K") if is_cod10k else ("train-test", _test_set_name(root))
    train = scan_pair(*train_pair) if train_pair is not None else None
    tests = {test_name: scan_pair(*test_pair)} if test_pair is not None else {}
    return splits_from_scans(layout, root, train, tests)


def _detect_sinet(root: Path) -> Optional[DatasetSplits]:
    train_dir = find_child_dir(root, ("traindataset",))
    test_dir = find_child_dir(root, ("testdataset",))
    if train_dir is None and test_dir is None:
        return None
    train_pair = find_pair_dirs(train_dir) if train_dir is not None else None
    train = scan_pair(*train_pair) if train_pair is not None else None
    tests: Dict[str, Scan] = {}
    empty: List[Path] = []
    if test_dir is not None:
        for sub in list_subdirs(test_dir):
            pair = find_pair_dirs(sub)
            if pair is not None:
                tests[sub.name] = scan_pair(*pair)
        if not tests:
            empty.append(test_dir)
    if train_dir is not None and train_pair is None:
        empty.append(train_dir)
    splits = splits_from_scans("SINet-V2", root, train, tests)
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
    train_dir = find_child_dir(image_dir, _TRAIN_DIR_NAMES)
    test_dir = find_child_dir(image_dir, _TEST_DIR_NAMES)
    if train_dir is None and test_dir is None:
        return None
    train_masks = find_child_dir(mask_dir, _TRAIN_DIR_NAMES) or mask_dir
    test_masks = find_child_dir(mask_dir, _TEST_DIR_NAMES) or mask_dir
    train = scan_pair(train_dir, train_masks) if train_dir is not None else None
    test = scan_pair(test_dir, test_masks) if test_dir is not None else None
    tests = {_test_set_name(root): test} if test is not None else {}
    splits = splits_from_scans("images-train-test", root, train, tests)
    if train is not None and test is not None and train_masks == test_masks:
        # One shared mask folder: a mask is an orphan only if neither split used it.
        shared = set(train.orphan_masks) & set(test.orphan_masks)
        splits.orphan_masks = sorted(shared, key=lambda p: p.name)
    return splits


def _detect_pairs(root: Path) -> Optional[DatasetSplits]:
    pair = find_pair_dirs(root)
    if pair is None:
        return None
    if pair[0] is not None and pair[1] is not None:
        split = _detect_split_images(root, *pair)
        if split is not None:
            return split
    scan = scan_pair(*pair)
    splits = splits_from_scans("pairs", root, scan, {_test_set_name(root): scan})
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
    scan = scan_pair(image_dir, mask_path)
    set_name = name or _test_set_name(image_dir.resolve().parent) or image_dir.name
    splits = splits_from_scans("pairs", image_dir.parent, scan, {set_name: scan})
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
    children = [(sub, _detect_structured(sub)) for sub in list_subdirs(root)]
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

