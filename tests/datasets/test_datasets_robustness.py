"""Data that breaks quietly: damaged pixel data, link loops, bare pairs folders, the synthetic set's name."""
import os
from pathlib import Path

import numpy as np
import pytest

from _datasets_helpers import write_pairs
from datasets import (
    SYNTHETIC_NAME,
    CODDataset,
    DatasetLayoutError,
    DatasetValidationError,
    ImageReadError,
    check_splits,
    discover_dataset,
    probe_image,
    validate_splits,
    write_synthetic_dataset,
)
from datasets.pixel_check import find_damaged
from datasets.validation_report import FIXES, NOT_A_FILE, UNREADABLE
from engine.settings import DataSettings
from engine.training.data import build_train_data


def damage_pixel_data(path: Path) -> Path:
    """Overwrite bytes inside the compressed data, keeping the header and end marker intact."""
    data = bytearray(path.read_bytes())
    if data[:2] == b"\xff\xd8":  # JPEG: scribble over the middle of the entropy-coded scan
        start = data.find(b"\xff\xda") + 20
        end = len(data) - 2
    else:  # PNG: flip bits of the first IDAT chunk's zlib stream
        start = data.find(b"IDAT") + 6
        end = start + 12
    mid = (start + end) // 2 if data[:2] == b"\xff\xd8" else start
    for i in range(mid, min(mid + 200, end)):
        data[i] = 0x5A if data[:2] == b"\xff\xd8" else data[i] ^ 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def pairs(tmp_path):
    root = tmp_path / "set"
    write_pairs(root / "Image", root / "GT", [f"s{i}" for i in range(6)], size=(64, 64))
    return root


@pytest.mark.parametrize("which", ["image.jpg", "mask.png"])
def test_damaged_pixel_data_is_found_before_training(pairs, which):
    target = pairs / "Image" / "s2.jpg" if which == "image.jpg" else pairs / "GT" / "s2.png"
    damage_pixel_data(target)
    assert probe_image(target).ok  # the header check alone cannot see it
    splits = discover_dataset(pairs)
    with pytest.raises(DatasetValidationError) as err:
        check_splits(splits, part="train", decode=True)
    problems = err.value.report.errors
    assert [(p.path, p.kind) for p in problems] == [(target, UNREADABLE)]
    assert "damaged" in problems[0].detail or "cannot be decoded" in problems[0].detail
    kept, _ = check_splits(splits, skip_bad_samples=True, part="train", decode=True)
    assert sorted(s.name for s in kept.train) == ["s0", "s1", "s3", "s4", "s5"]


def test_pixel_check_in_worker_processes_matches_in_process(pairs):
    bad = [damage_pixel_data(pairs / "Image" / "s1.jpg"), damage_pixel_data(pairs / "GT" / "s4.png")]
    files = sorted(pairs.rglob("*.*"))
    assert set(find_damaged(files, workers=2)) == set(bad) == set(find_damaged(files, workers=0))


def test_sample_failing_mid_epoch_is_skipped_with_skip_bad_samples(pairs, capfd):
    cfg = DataSettings(dataset_paths=[str(pairs)], skip_bad_samples=True, val_fraction=0.2, img_size=32)
    data = build_train_data(cfg, seed=0, log=lambda _: None, progress=False)
    base = data.train_set.dataset
    # Damaged after the check (a network disk, a file being replaced): the epoch goes on.
    victim = base.samples[1]
    damage_pixel_data(victim.mask)
    items = [data.train_set[i] for i in range(len(data.train_set))]
    # train's loader sends uint8 (H, W, 3) images, normalised later on the device
    assert len(items) == len(base) and all(it["image"].shape == (32, 32, 3) for it in items)
    assert list(base.skipped) == [1]
    assert victim.mask.name in capfd.readouterr().err
    # Without the flag the failure names the file.
    strict = CODDataset(base.samples)
    with pytest.raises(ImageReadError, match=victim.mask.name):
        strict[1]


def test_link_loop_dangling_link_and_folder_named_like_an_image_are_reported(pairs):
    image_dir = pairs / "Image"
    os.symlink("loop_b.jpg", image_dir / "loop_a.jpg")
    os.symlink("loop_a.jpg", image_dir / "loop_b.jpg")
    os.symlink("gone.jpg", image_dir / "dangling.jpg")
    (image_dir / "folder.jpg").mkdir()
    os.symlink("..", image_dir / "up")  # a folder loop: must not trap the scan
    (pairs / "GT" / "extra.png").write_bytes(b"")  # another problem, reported alongside
    splits = discover_dataset(pairs)
    assert len(splits.train) == 6
    report = validate_splits(splits)
    unusable = {p.path.name: p.detail for p in report.problems if p.kind == NOT_A_FILE}
    assert set(unusable) == {"loop_a.jpg", "loop_b.jpg", "dangling.jpg", "folder.jpg"}
    assert "loop" in unusable["loop_a.jpg"] and "broken" in unusable["dangling.jpg"]
    assert "folder" in unusable["folder.jpg"]
    assert any(p.path.name == "extra.png" for p in report.problems)
    text = report.format()
    assert "loop_a.jpg" in text and f"[{NOT_A_FILE}]" in text and FIXES[NOT_A_FILE] in text  # its group and fix
    # Warnings only: training can start, with every problem shown.
    kept, _ = check_splits(splits, part="train")
    assert len(kept.train) == 6


def test_bare_pairs_folder_is_training_data_only(pairs):
    splits = discover_dataset(pairs)
    assert not splits.split_declared and splits.tests  # evaluate may test on it
    logs = []
    cfg = DataSettings(dataset_paths=[str(pairs)], val_fraction=0.2, img_size=32)
    data = build_train_data(cfg, seed=0, log=logs.append, progress=False)
    text = "\n".join(logs)
    assert "test none" in text and "test set" in text and "training data" in text
    assert len(data.train_set) + len(data.val_set) == 6


def test_unrecognised_folder_suggests_only_what_the_cli_allows(tmp_path):
    (tmp_path / "photos").mkdir()
    write_pairs(tmp_path / "elsewhere" / "pics", tmp_path / "elsewhere" / "labels", ["a", "b"])
    with pytest.raises(DatasetLayoutError) as err:
        discover_dataset(tmp_path / "photos")
    message = str(err.value)
    assert "explicitly" not in message
    assert "{Image,Mask}" in message and "ln -s" in message and "--dataset-path my_set" in message
    # The recipe the message gives works.
    my_set = tmp_path / "my_set"
    my_set.mkdir()
    os.symlink(tmp_path / "elsewhere" / "pics", my_set / "Image")
    os.symlink(tmp_path / "elsewhere" / "labels", my_set / "GT")
    assert [s.name for s in discover_dataset(my_set).train] == ["a", "b"]


def test_synthetic_set_is_labelled_synthetic(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", n_train=3, n_test=2, img_size=32, progress=False)
    splits = discover_dataset(root)
    assert splits.layout == SYNTHETIC_NAME and list(splits.tests) == [SYNTHETIC_NAME]
    assert "COD10K" not in splits.summary().split(":", 1)[1]
    # Also when wrapped in one more folder.
    assert list(discover_dataset(tmp_path).tests) == [SYNTHETIC_NAME]
    # A real COD10K-v3 tree keeps its name.
    write_pairs(tmp_path / "real" / "Test" / "Image", tmp_path / "real" / "Test" / "GT_Object", ["x"])
    assert list(discover_dataset(tmp_path / "real").tests) == ["COD10K"]


def test_train_data_line_says_synthetic(tmp_path):
    cfg = DataSettings(val_fraction=0.25, img_size=32,
                       synthetic=dict(cache_dir=str(tmp_path), n_train=4, n_test=2, img_size=32, noncam_fraction=0.0))
    logs = []
    build_train_data(cfg, seed=0, log=logs.append, progress=False)
    line = next(line for line in logs if line.startswith("Data: synthetic"))
    assert "COD10K" not in line and "test synthetic 2" in line


def test_train_data_check_decodes_pixel_data(pairs):
    damage_pixel_data(pairs / "GT" / "s3.png")
    cfg = DataSettings(dataset_paths=[str(pairs)], val_fraction=0.2, img_size=32)
    with pytest.raises(DatasetValidationError, match="s3.png"):
        build_train_data(cfg, seed=0, log=lambda _: None, progress=False)
    data = build_train_data(cfg.model_copy(update={"skip_bad_samples": True}), seed=0, log=lambda _: None, progress=False)
    assert len(data.train_set) + len(data.val_set) == 5
