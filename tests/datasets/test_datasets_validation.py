"""Dataset validation: every bad-input case found in one pass, with path and fix."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from _datasets_helpers import truncate, write_image, write_mask, write_pairs
from datasets import (
    DatasetValidationError,
    check_splits,
    discover_dataset,
    probe_image,
    validate_samples,
    validate_splits,
)
from datasets.layouts import SampleRef
from datasets.validation import (
    EMPTY_FOLDER,
    FIXES,
    MISSING_MASK,
    ORPHAN_MASK,
    SIZE_MISMATCH,
    TRUNCATED,
    UNREADABLE,
)


def make_broken_sinet(root: Path) -> dict:
    """A SINet-V2 tree with one of each problem; returns the offending paths by kind."""
    train = root / "TrainDataset"
    write_pairs(train / "Imgs", train / "GT", ["good1", "good2", "trunc_jpg", "trunc_png",
                                               "corrupt", "mismatch"])
    truncate(train / "Imgs" / "trunc_jpg.jpg")
    truncate(train / "GT" / "trunc_png.png")
    (train / "Imgs" / "corrupt.jpg").write_bytes(b"this is not an image at all" * 10)
    write_mask(train / "GT" / "mismatch.png", size=(40, 48))
    write_image(train / "Imgs" / "no_mask.jpg")
    write_mask(train / "GT" / "no_image.png")
    empty = root / "TestDataset" / "EMPTY" / "Imgs"
    empty.mkdir(parents=True)
    return {
        TRUNCATED: {train / "Imgs" / "trunc_jpg.jpg", train / "GT" / "trunc_png.png"},
        UNREADABLE: {train / "Imgs" / "corrupt.jpg"},
        SIZE_MISMATCH: {train / "Imgs" / "mismatch.jpg"},
        MISSING_MASK: {train / "Imgs" / "no_mask.jpg"},
        ORPHAN_MASK: {train / "GT" / "no_image.png"},
        EMPTY_FOLDER: {empty},
    }


def test_all_problems_found_in_one_pass(tmp_path):
    expected = make_broken_sinet(tmp_path / "data")
    splits = discover_dataset(tmp_path / "data")
    report = validate_splits(splits)

    assert not report.ok
    found = {kind: {p.path for p in problems} for kind, problems in report.by_kind().items()}
    assert found == expected
    # Samples to drop: everything but the two good ones.
    assert {p.name for p in report.bad_images} == {
        "trunc_jpg.jpg", "trunc_png.jpg", "corrupt.jpg", "mismatch.jpg", "no_mask.jpg"}
    assert [s.name for s in report.filter(splits.train)] == ["good1", "good2"]
    filtered = report.filter_splits(splits)
    assert [s.name for s in filtered.train] == ["good1", "good2"]
    assert len(splits.train) == 7  # the original is untouched

    text = report.format()
    for paths in expected.values():
        for path in paths:
            assert str(path) in text
    for kind in expected:
        assert FIXES[kind] in text
    assert "image 48x32, mask 48x40" in text
    assert "--skip-bad-samples" in text

    error = DatasetValidationError(report)
    assert str(error) == text and error.report is report


def test_each_problem_has_path_kind_and_fix(tmp_path):
    make_broken_sinet(tmp_path / "data")
    report = validate_splits(discover_dataset(tmp_path / "data"))
    for problem in report.problems:
        assert problem.path.exists()
        assert problem.kind in FIXES
        assert problem.fix and "\n" not in problem.fix
        assert str(problem.path) in str(problem)


def test_format_limits_paths_per_kind(tmp_path):
    samples = [SampleRef.from_paths(write_image(tmp_path / f"i{i}.jpg")) for i in range(5)]
    report = validate_samples(samples)
    assert len(report.problems) == 5
    assert "... and 3 more" in report.format(max_per_kind=2)
    assert "... and" not in report.format(max_per_kind=None)


def test_clean_dataset_passes_including_gray_rgba_16bit_and_soft_masks(tmp_path):
    root = tmp_path / "set"
    write_pairs(root / "Image", root / "GT", ["plain"])
    write_image(root / "Image" / "gray.png", gray=True)
    write_mask(root / "GT" / "gray.png", soft=True)
    rgba = np.dstack([np.full((32, 48, 3), 90, np.uint8), np.full((32, 48), 255, np.uint8)])
    cv2.imwrite(str(root / "Image" / "rgba.png"), rgba)
    write_mask(root / "GT" / "rgba.png")
    cv2.imwrite(str(root / "Image" / "deep.png"), np.full((32, 48, 3), 40000, np.uint16))
    cv2.imwrite(str(root / "GT" / "deep.png"), np.full((32, 48), 65535, np.uint16))
    write_image(root / "Image" / "bmp.bmp")
    write_mask(root / "GT" / "bmp.bmp")
    write_image(root / "Image" / "tif.tif")
    write_mask(root / "GT" / "tif.tiff")
    report = validate_splits(discover_dataset(root), decode=True)
    assert report.ok, report.format()
    assert report.n_samples == 6
    assert "passed" in report.format()


def test_empty_dataset_is_reported(tmp_path):
    (tmp_path / "set" / "Image").mkdir(parents=True)
    report = validate_splits(discover_dataset(tmp_path / "set"))
    kinds = [p.kind for p in report.problems]
    assert kinds[0] == "no_samples"
    assert EMPTY_FOLDER in kinds


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tif"])
def test_probe_reads_size_from_header(tmp_path, ext):
    path = write_image(tmp_path / f"x{ext}", size=(37, 61))
    probe = probe_image(path)
    assert probe.ok, probe.detail
    assert probe.size == (37, 61)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_probe_detects_truncation(tmp_path, ext):
    path = truncate(write_image(tmp_path / f"x{ext}", size=(48, 64)), keep=0.6)
    probe = probe_image(path)
    assert probe.problem == "truncated", probe
    assert probe.detail


def test_truncated_progressive_jpeg_and_jpeg_with_trailing_bytes(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / "prog.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert probe_image(path).ok
    # Bytes after the end marker (some cameras append data) are not damage.
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(path.read_bytes() + b"extra trailer data" * 20)
    assert probe_image(padded).ok
    truncate(path, keep=0.8)
    assert probe_image(path).problem == "truncated"


def test_probe_reports_unreadable_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x00\x01garbage" * 50)
    header_only = tmp_path / "header.jpg"
    header_only.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    assert probe_image(empty).problem == "unreadable"
    assert probe_image(garbage).problem == "unreadable"
    assert probe_image(header_only).problem in ("truncated", "unreadable")
    assert probe_image(tmp_path / "missing.jpg").problem == "unreadable"


def test_png_saved_as_jpg_is_probed_by_content(tmp_path):
    path = tmp_path / "actually_png.jpg"
    cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1].tofile(str(path))
    probe = probe_image(path)
    assert probe.ok and probe.format == "png" and probe.size == (20, 30)


def test_check_splits_raises_or_skips_bad_samples(tmp_path):
    make_broken_sinet(tmp_path / "data")
    splits = discover_dataset(tmp_path / "data")
    with pytest.raises(DatasetValidationError) as info:
        check_splits(splits)
    assert "trunc_jpg.jpg" in str(info.value)
    assert info.value.report.has_errors

    kept, report = check_splits(splits, skip_bad_samples=True)
    assert [s.name for s in kept.train] == ["good1", "good2"]
    assert {p.kind for p in report.warnings} == {ORPHAN_MASK, EMPTY_FOLDER}
    assert "error:" in report.format() and "warning:" in report.format()


def test_check_splits_passes_with_warnings_only(tmp_path):
    root = tmp_path / "set"
    write_pairs(root / "Image", root / "GT", ["a", "b"])
    write_mask(root / "GT" / "orphan.png")
    splits = discover_dataset(root)
    kept, report = check_splits(splits)
    assert kept is splits
    assert not report.ok and not report.has_errors
    assert [p.kind for p in report.warnings] == [ORPHAN_MASK]


def test_check_splits_fails_when_nothing_usable_is_left(tmp_path):
    root = tmp_path / "set"
    write_image(root / "Image" / "a.jpg")
    (root / "GT").mkdir()
    with pytest.raises(DatasetValidationError, match="missing_mask"):
        check_splits(discover_dataset(root), skip_bad_samples=True)


def test_check_splits_part_limits_what_is_checked(tmp_path):
    root = tmp_path / "COD10K-v3"
    write_pairs(root / "Train" / "Image", root / "Train" / "GT_Object", ["tr1", "tr2"])
    write_pairs(root / "Test" / "Image", root / "Test" / "GT_Object", ["te1", "te2"])
    truncate(root / "Test" / "Image" / "te1.jpg")
    splits = discover_dataset(root)
    kept, report = check_splits(splits, part="train")  # a damaged test image does not stop training
    assert report.ok and kept is splits
    with pytest.raises(DatasetValidationError, match="te1.jpg"):
        check_splits(splits, part="tests")
    kept, report = check_splits(splits, skip_bad_samples=True, part="tests")
    assert [s.name for s in kept.tests["COD10K"]] == ["te2"]
    with pytest.raises(ValueError, match="part"):
        check_splits(splits, part="val")
