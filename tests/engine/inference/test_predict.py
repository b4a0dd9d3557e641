"""``predict``: masks at each input's size named by stem, overlays, thresholds, clear input errors."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from _inference_fixtures import write_cod10k_layout, write_scene
from engine.inference.predict import make_overlay, output_names
from train_ultimate import main

SIZES = {"wide": (50, 70), "square": (64, 64), "thin": (33, 100), "tall": (90, 41)}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i, (stem, size) in enumerate(SIZES.items()):
        ext = ".jpg" if i % 2 else ".png"
        write_scene(folder / f"{stem}{ext}", None, size, i)
    return folder


def _predict(ckpt, *args):
    return CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--device", "cpu", "--num-workers", "0",
                                     "--no-progress", *map(str, args)])


def test_probability_masks_at_input_sizes(ckpt, images, tmp_path):
    out = tmp_path / "out"
    r = _predict(ckpt, "--input", images, "--output", out, "--batch-size", "3")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{s}.png" for s in SIZES)
    for stem, size in SIZES.items():
        mask = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == size, stem
    assert not (out / "overlay").exists()


def test_threshold_gives_binary_and_overlay(ckpt, images, tmp_path):
    out = tmp_path / "bin"
    r = _predict(ckpt, "--input", images / "wide.png", "--input", str(images / "*.jpg"), "--output", out,
                 "--threshold", "0.5", "--overlay")
    assert r.exit_code == 0, r.output
    stems = {"wide", "square", "tall"}  # wide.png + the .jpg inputs (square, tall)
    assert {p.stem for p in out.glob("*.png")} == stems
    for stem in stems:
        mask = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(mask)) <= {0, 255}
        ov = cv2.imread(str(out / "overlay" / f"{stem}.jpg"), cv2.IMREAD_UNCHANGED)
        assert ov is not None and ov.shape == (*SIZES[stem], 3)
    # Thresholding the probability map gives the binary mask.
    prob_out = tmp_path / "prob"
    assert _predict(ckpt, "--input", images / "wide.png", "--output", prob_out).exit_code == 0
    prob = cv2.imread(str(prob_out / "wide.png"), cv2.IMREAD_UNCHANGED)
    binary = cv2.imread(str(out / "wide.png"), cv2.IMREAD_UNCHANGED)
    agree = ((prob >= 128) == (binary == 255)).mean()
    assert agree > 0.99  # equal up to values quantised onto the 0.5 boundary


def test_tta_and_img_size(ckpt, images, tmp_path):
    out = tmp_path / "tta"
    r = _predict(ckpt, "--input", images, "--output", out, "--tta", "--img-size", "96")
    assert r.exit_code == 0, r.output
    assert "TTA" in r.output and "96x96" in r.output
    assert cv2.imread(str(out / "thin.png"), cv2.IMREAD_UNCHANGED).shape == SIZES["thin"]


def test_missing_inputs_are_named(ckpt, images, tmp_path):
    r = _predict(ckpt, "--input", images, "--input", tmp_path / "nope.jpg", "--input", str(tmp_path / "none" / "*.png"),
                 "--output", tmp_path / "o")
    assert r.exit_code != 0
    assert "nope.jpg" in r.output and "none" in r.output and "matched no image" in r.output
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _predict(ckpt, "--input", empty, "--output", tmp_path / "o")
    assert r.exit_code != 0 and str(empty) in r.output


def test_unreadable_image_is_named_and_others_written(ckpt, images, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_scene(folder / "good.png", None, (50, 70), 0)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    out = tmp_path / "out"
    r = _predict(ckpt, "--input", folder, "--output", out)
    assert r.exit_code != 0
    assert "broken.jpg" in r.output and "could not be read" in r.output
    assert (out / "good.png").is_file() and not (out / "broken.png").exists()


def test_bad_threshold_and_checkpoint(ckpt, images, tmp_path):
    for bad in ("1.5", "nan"):  # NaN would pass a range check and make every pixel background
        r = _predict(ckpt, "--input", images, "--output", tmp_path / "o", "--threshold", bad)
        assert r.exit_code == 2 and "--threshold" in r.output, r.output
    r = _predict(tmp_path / "missing.pt", "--input", images, "--output", tmp_path / "o")
    assert r.exit_code != 0 and "Checkpoint not found" in r.output


def test_predict_equals_evaluate_saved_prediction(ckpt, tmp_path):
    # One forward/resize path: the mask `predict` writes for an image is the map `evaluate` scores for it.
    root = write_cod10k_layout(tmp_path / "COD10K-v3")
    preds = tmp_path / "preds"
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(root), "--save-predictions",
                                  str(preds), "--device", "cpu", "--num-workers", "0", "--no-progress", "--tta"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "pred"
    r = _predict(ckpt, "--input", root / "Test" / "Image", "--output", out, "--tta")
    assert r.exit_code == 0, r.output
    saved = sorted((preds / "COD10K").glob("*.png"))
    assert saved
    for p in saved:
        a = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(out / p.name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(a, b), p.name


def test_output_names_and_overlay_helper():
    assert output_names([Path("a/x.jpg"), Path("b/x.png"), Path("c/y.jpg"), Path("d/X.jpg")]) == ["x", "x-2", "y", "X-3"]
    image = np.full((20, 30, 3), 100, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 255
    ov = make_overlay(image, mask)
    assert ov.shape == image.shape and ov.dtype == np.uint8
    assert (ov[0, 0] == image[0, 0]).all()  # background untouched
    assert ov[10, 15, 0] > image[10, 15, 0]  # object tinted red


def test_webp_is_read_and_other_files_are_named(ckpt, tmp_path):
    folder = tmp_path / "mixed"
    write_scene(folder / "a.png", None, (40, 60), 0)
    rgb = np.random.default_rng(0).integers(0, 256, (48, 30, 3), dtype=np.uint8)
    assert cv2.imwrite(str(folder / "b.webp"), rgb)
    (folder / "notes.txt").write_text("not an image")
    (folder / "c.heic").write_bytes(b"\0" * 16)
    out = tmp_path / "out"
    r = _predict(ckpt, "--input", folder, "--output", out)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]
    assert cv2.imread(str(out / "b.png"), cv2.IMREAD_UNCHANGED).shape == (48, 30)
    assert "Skipped 2 file(s)" in r.output and "c.heic" in r.output and "notes.txt" in r.output


def test_predict_images_takes_its_choices_as_keywords_or_as_options(ckpt, images, tmp_path):
    from engine.inference.options import PredictOptions
    from engine.inference.predict import predict_images

    quiet = dict(device="cpu", num_workers=0, progress=False)
    by_keywords = predict_images(ckpt, [images / "wide.png"], tmp_path / "k", threshold=0.5, log=lambda _: None,
                                 **quiet)
    by_object = predict_images(ckpt, [images / "wide.png"], tmp_path / "o", PredictOptions(threshold=0.5, **quiet),
                               log=lambda _: None)
    mask = cv2.imread(str(by_keywords.masks[0]), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(mask)) <= {0, 255}
    assert by_keywords.masks[0].read_bytes() == by_object.masks[0].read_bytes()
