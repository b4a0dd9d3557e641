"""Dataset discovery: every layout, categories, combining several paths."""

from pathlib import Path

import pytest

from _datasets_helpers import write_image, write_mask, write_pairs
from datasets import (
    Cod10kCategory,
    DatasetLayoutError,
    combine,
    discover_dataset,
    discover_pairs,
    parse_cod10k_category,
)

CAM_NAMES = [
    "COD10K-CAM-1-Aquatic-3-Flounder-11",
    "COD10K-CAM-2-Terrestrial-23-Cat-1356",
    "COD10K-CAM-3-Flying-53-Bird-3024",
]


def _names(samples):
    return [s.name for s in samples]


def make_cod10k(root: Path) -> Path:
    """COD10K-v3 tree: masks only for CAM images, like the real release, plus edge/instance folders."""
    for split, names in (("Train", CAM_NAMES[:2]), ("Test", CAM_NAMES[2:])):
        write_pairs(root / split / "Image", root / split / "GT_Object", names)
        write_pairs(root / split / "Image", root / split / "GT_Edge", names)  # must be ignored
        (root / split / "GT_Instance").mkdir()
    write_image(root / "Train" / "Image" / "COD10K-NonCAM-5-Background-3-Sky-2651.jpg")
    return root


def test_cod10k_v3_layout(tmp_path):
    root = make_cod10k(tmp_path / "COD10K-v3")
    splits = discover_dataset(root)
    assert splits.layout == "COD10K-v3"
    assert splits.root == root
    assert _names(splits.train) == CAM_NAMES[:2]
    assert list(splits.tests) == ["COD10K"]
    assert _names(splits.tests["COD10K"]) == CAM_NAMES[2:]
    for sample in splits.train + splits.tests["COD10K"]:
        assert sample.mask.parent.name == "GT_Object"
        assert sample.mask.stem == sample.image.stem
        assert sample.category.camouflaged
    # A NonCAM image without a mask is left out (the usual 3040/2026 protocol) but recorded.
    assert [p.name for p in splits.skipped_noncam] == ["COD10K-NonCAM-5-Background-3-Sky-2651.jpg"]
    assert "NonCAM" in splits.summary()
    assert splits.orphan_masks == [] and splits.empty_dirs == []


def test_cod10k_noncam_with_mask_is_kept(tmp_path):
    root = tmp_path / "COD10K-v3"
    write_pairs(root / "Train" / "Image", root / "Train" / "GT_Object", ["COD10K-NonCAM-5-Background-3-Sky-7"])
    splits = discover_dataset(root)
    assert len(splits.train) == 1 and splits.train[0].category.camouflaged is False
    assert splits.tests == {}


def test_sinet_v2_layout_with_several_test_sets(tmp_path):
    root = tmp_path / "sinet"
    write_pairs(root / "TrainDataset" / "Imgs", root / "TrainDataset" / "GT", ["a", "b", "c"])
    for name, n in (("CAMO", 2), ("CHAMELEON", 1), ("NC4K", 3)):
        write_pairs(root / "TestDataset" / name / "Imgs", root / "TestDataset" / name / "GT",
                    [f"{name.lower()}{i}" for i in range(n)])
    (root / "TestDataset" / "README").mkdir()  # not a dataset: ignored
    splits = discover_dataset(root)
    assert splits.layout == "SINet-V2"
    assert _names(splits.train) == ["a", "b", "c"]
    assert {k: len(v) for k, v in splits.tests.items()} == {"CAMO": 2, "CHAMELEON": 1, "NC4K": 3}


@pytest.mark.parametrize(
    "image_dir, mask_dir",
    [("Image", "Mask"), ("Image", "GT"), ("im", "gt"), ("Imgs", "GT"), ("IMAGES", "masks")],
)
def test_plain_pair_layouts(tmp_path, image_dir, mask_dir):
    root = tmp_path / "CHAMELEON"
    write_pairs(root / image_dir, root / mask_dir, ["x1", "x2"])
    splits = discover_dataset(root)
    assert splits.layout == "pairs"
    assert _names(splits.train) == ["x1", "x2"]
    assert _names(splits.tests["CHAMELEON"]) == ["x1", "x2"]
    assert all(s.mask is not None and s.mask.parent.name == mask_dir for s in splits.train)
    assert all(s.category is None for s in splits.train)


def test_extensions_are_case_insensitive_and_other_files_ignored(tmp_path):
    root = tmp_path / "set"
    write_image(root / "Image" / "a.JPG")
    write_image(root / "Image" / "b.Jpeg")
    write_image(root / "Image" / "c.bmp")
    write_image(root / "Image" / "d.TIFF")
    for stem in "abcd":
        write_mask(root / "GT" / f"{stem}.PNG")
    (root / "Image" / "notes.txt").write_text("not an image")
    (root / "Image" / ".DS_Store").write_bytes(b"\0")
    (root / "GT" / "Thumbs.db").write_bytes(b"\0")
    splits = discover_dataset(root)
    assert _names(splits.train) == ["a", "b", "c", "d"]
    assert splits.orphan_masks == []


def test_orphan_masks_duplicates_and_empty_folders_are_recorded(tmp_path):
    root = tmp_path / "set"
    write_pairs(root / "Image", root / "GT", ["a"])
    write_mask(root / "GT" / "lonely.png")
    write_image(root / "Image" / "a.png")  # same stem as a.jpg
    splits = discover_dataset(root)
    assert [p.name for p in splits.orphan_masks] == ["lonely.png"]
    assert [p.name for p in splits.duplicates] == ["a.png"]
    assert splits.train[0].image.name == "a.jpg"

    empty = tmp_path / "empty"
    (empty / "Image").mkdir(parents=True)
    (empty / "GT").mkdir()
    splits = discover_dataset(empty)
    assert splits.train == []
    assert sorted(p.name for p in splits.empty_dirs) == ["GT", "Image"]


def test_mask_matched_with_different_case_stem(tmp_path):
    root = tmp_path / "set"
    write_image(root / "Image" / "IMG_1.jpg")
    write_mask(root / "GT" / "img_1.png")
    splits = discover_dataset(root)
    assert splits.train[0].mask.name == "img_1.png"
    assert splits.orphan_masks == []


def test_collection_of_pair_folders(tmp_path):
    root = tmp_path / "TestDataset"
    write_pairs(root / "CAMO" / "Imgs", root / "CAMO" / "GT", ["c1", "c2"])
    write_pairs(root / "NC4K" / "Imgs", root / "NC4K" / "GT", ["n1"])
    splits = discover_dataset(root)
    assert splits.layout == "collection"
    assert {k: _names(v) for k, v in splits.tests.items()} == {"CAMO": ["c1", "c2"], "NC4K": ["n1"]}


def test_wrapper_folder_around_one_dataset(tmp_path):
    make_cod10k(tmp_path / "cod10k-dataset" / "COD10K-v3")
    splits = discover_dataset(tmp_path / "cod10k-dataset")
    assert splits.layout == "COD10K-v3"
    assert splits.root.name == "COD10K-v3"


def test_explicit_image_and_mask_folders(tmp_path):
    write_pairs(tmp_path / "CAMO" / "photos", tmp_path / "CAMO" / "labels", ["p1", "p2"])
    splits = discover_pairs(tmp_path / "CAMO" / "photos", tmp_path / "CAMO" / "labels")
    assert _names(splits.tests["CAMO"]) == ["p1", "p2"]
    assert all(s.mask.parent.name == "labels" for s in splits.train)
    with pytest.raises(DatasetLayoutError, match="nope"):
        discover_pairs(tmp_path / "nope", tmp_path / "CAMO" / "labels")


def test_unknown_layout_error_names_path_and_layouts(tmp_path):
    root = tmp_path / "random"
    write_image(root / "photos" / "a.jpg")
    with pytest.raises(DatasetLayoutError) as info:
        discover_dataset(root)
    message = str(info.value)
    assert str(root) in message
    for layout in ("COD10K-v3", "SINet-V2", "Image,Mask", "im,gt"):
        assert layout in message
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        discover_dataset(tmp_path / "missing")


def test_combine_concatenates_train_and_suffixes_clashing_test_names(tmp_path):
    cod = discover_dataset(make_cod10k(tmp_path / "COD10K-v3"))
    root = tmp_path / "sinet"
    write_pairs(root / "TrainDataset" / "Imgs", root / "TrainDataset" / "GT", ["s1"])
    write_pairs(root / "TestDataset" / "COD10K" / "Imgs", root / "TestDataset" / "COD10K" / "GT", ["t1"])
    write_pairs(root / "TestDataset" / "CAMO" / "Imgs", root / "TestDataset" / "CAMO" / "GT", ["t2"])
    sinet = discover_dataset(root)

    merged = combine([cod, sinet, cod])  # the same root twice is used once
    assert _names(merged.train) == CAM_NAMES[:2] + ["s1"]
    assert list(merged.tests) == ["COD10K", "CAMO", "COD10K-2"]
    assert _names(merged.tests["COD10K-2"]) == ["t1"]
    assert merged.layout == "COD10K-v3+SINet-V2"
    assert len(merged.skipped_noncam) == 1
    with pytest.raises(ValueError):
        combine([])


@pytest.mark.parametrize(
    "name, expected",
    [
        ("COD10K-CAM-1-Aquatic-3-Flounder-11.jpg", Cod10kCategory(True, "Aquatic", "Flounder", 1, 3)),
        ("COD10K-CAM-2-Terrestrial-23-Cat-1356", Cod10kCategory(True, "Terrestrial", "Cat", 2, 23)),
        ("COD10K-CAM-1-Aquatic-7-GhostPipefish-401.png", Cod10kCategory(True, "Aquatic", "GhostPipefish", 1, 7)),
        ("COD10K-NonCAM-5-Background-3-Sky-2651.jpg", Cod10kCategory(False, "Background", "Sky", 5, 3)),
        ("COD10K-NonCAM-5-Background", Cod10kCategory(False, "Background", None, 5, None)),
        ("COD10K-NonCAM-1234", Cod10kCategory(False, None, None, None, None)),
        ("camourflage_00012.jpg", None),
        ("COD10Kfoo-CAM-1-A-1-B-1", None),
        ("animal-1.jpg", None),
    ],
)
def test_parse_cod10k_category(name, expected):
    assert parse_cod10k_category(name) == expected


def test_camo_layout_images_split_with_shared_gt(tmp_path):
    root = tmp_path / "CAMO-V.1.0-CVIU2019"
    write_pairs(root / "Images" / "Train", root / "GT", ["camourflage_00001", "camourflage_00002"])
    write_pairs(root / "Images" / "Test", root / "GT", ["camourflage_00003"])
    write_mask(root / "GT" / "camourflage_09999.png")
    splits = discover_dataset(root)
    assert splits.layout == "images-train-test"
    assert _names(splits.train) == ["camourflage_00001", "camourflage_00002"]
    assert list(splits.tests) == ["CAMO"]
    assert _names(splits.tests["CAMO"]) == ["camourflage_00003"]
    # Masks used by the other split are not orphans; the unused one is.
    assert [p.name for p in splits.orphan_masks] == ["camourflage_09999.png"]


def test_train_test_layout_with_gt_folders(tmp_path):
    root = tmp_path / "NC4K_release"
    write_pairs(root / "train" / "images", root / "train" / "masks", ["a"])
    write_pairs(root / "test" / "images", root / "test" / "masks", ["b"])
    splits = discover_dataset(root)
    assert splits.layout == "train-test"
    assert _names(splits.train) == ["a"] and _names(splits.tests["NC4K"]) == ["b"]


def test_public_api_resolves_and_light_modules_skip_torch():
    import subprocess
    import sys

    import datasets

    for name in datasets.__all__:
        assert getattr(datasets, name) is not None, name
    # Discovery, validation and synthetic scenes must not import torch/albumentations.
    code = ("import sys, datasets; datasets.discover_dataset; datasets.check_splits; "
            "datasets.write_synthetic_dataset; "
            "print(sorted(m for m in ('torch', 'albumentations') if m in sys.modules))")
    repo = Path(datasets.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "[]"
