"""Synthetic scenes: deterministic by seed and worker count, COD10K layout and names, COD-like statistics,
defaults equal to configs/default.yaml, atomic cache, make-synthetic's up-front checks and clean-up on failure."""

import inspect
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import datasets.synthetic as synthetic
from datasets import discover_dataset, ensure_synthetic_dataset, validate_splits, write_synthetic_dataset
from datasets.benchmark import benchmark_data_pipeline
from train_ultimate import main

SMALL = dict(n_train=8, n_test=4, img_size=48, progress=False, noncam_fraction=0.3)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path):
    a = _files(write_synthetic_dataset(tmp_path / "a", seed=5, **SMALL))
    b = _files(write_synthetic_dataset(tmp_path / "b", seed=5, **SMALL))
    c = _files(write_synthetic_dataset(tmp_path / "c", seed=6, **SMALL))
    assert a == b
    images_a = {k: v for k, v in a.items() if k.endswith(".jpg")}
    images_c = {k: v for k, v in c.items() if k.endswith(".jpg")}
    assert len(images_a) == 12
    assert list(images_a.values()) != list(images_c.values())


def test_layout_names_masks_and_manifest(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", seed=0, **SMALL)
    splits = discover_dataset(root)
    assert splits.layout == "synthetic"  # labelled as what it is, not as COD10K
    assert len(splits.train) == 8 and len(splits.tests["synthetic"]) == 4
    assert validate_splits(splits).ok

    n_cam = n_noncam = 0
    for sample in splits.train + splits.tests["synthetic"]:
        image = cv2.imread(str(sample.image))
        mask = cv2.imread(str(sample.mask), cv2.IMREAD_UNCHANGED)
        assert image.shape == (48, 48, 3) and mask.shape == (48, 48)
        assert set(np.unique(mask).tolist()) <= {0, 255}  # binary
        category = sample.category
        if category.camouflaged:
            n_cam += 1
            assert category.super_class == "Synthetic"
            assert category.sub_class in synthetic.SHAPES
            assert mask.any(), sample.name
        else:
            n_noncam += 1
            assert not mask.any(), sample.name
    assert n_cam > 0 and n_noncam > 0

    manifest = json.loads((root / "synthetic.json").read_text())
    assert manifest["seed"] == 0 and manifest["img_size"] == [48, 48]
    assert manifest["version"] == synthetic.GENERATOR_VERSION
    assert sum(manifest["difficulty"]["Train"].values()) == manifest["counts"]["Train"]["cam"]
    assert manifest["n_train"] == 8 and manifest["n_test"] == 4
    assert sum(manifest["counts"]["Train"].values()) == 8
    assert manifest["counts"]["Train"]["noncam"] + manifest["counts"]["Test"]["noncam"] == n_noncam


def test_objects_are_camouflaged_and_difficulty_orders_the_contrast():
    # Mean colour inside the object vs a ring around it: larger for easy scenes than for hard ones,
    # and within the texture's own spread, so the mean colour alone does not give the object away.
    diffs = {level: [] for level in synthetic.DIFFICULTIES}
    ratios = []
    for i in range(45):
        scene = synthetic.draw_scene(np.random.default_rng([1, 0, i]), 96)
        image, mask = scene.image.astype(np.float32), scene.mask
        ring = (cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0) & (mask == 0)
        diff = np.abs(image[mask > 0].mean(0) - image[ring].mean(0)).max()
        diffs[scene.difficulty].append(diff)
        ratios.append(diff / image[mask == 0].std(0).max())
    easy, medium, hard = (np.median(diffs[k]) for k in ("easy", "medium", "hard"))
    assert hard < medium < easy
    assert hard < 15
    assert np.median(ratios) < 1.0


def test_worker_processes_do_not_change_the_files(tmp_path):
    params = dict(n_train=5, n_test=3, img_size=40, seed=2, progress=False)
    one = _files(write_synthetic_dataset(tmp_path / "one", workers=1, **params))
    two = _files(write_synthetic_dataset(tmp_path / "two", workers=2, **params))
    assert one == two and len(one) == 17  # 8 images, 8 masks, manifest
    with pytest.raises(ValueError, match="workers"):
        write_synthetic_dataset(tmp_path / "zero", workers=0, **params)


def test_defaults_equal_the_config_file():
    # One source of defaults: the generator's signature and data.synthetic of configs/default.yaml.
    config = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
    section = yaml.safe_load(config.read_text())["data"]["synthetic"]
    for func in (write_synthetic_dataset, ensure_synthetic_dataset):
        signature = inspect.signature(func).parameters
        for key, value in section.items():
            if key == "cache_dir" and func is write_synthetic_dataset:
                continue  # the writer takes an explicit folder instead
            assert key in signature, f"{func.__name__} lacks data.synthetic.{key}"
            assert signature[key].default == value, (func.__name__, key, signature[key].default, value)


def test_scene_statistics_follow_cod10k():
    # Object area mostly 1-20% of the image, a difficulty mix, sometimes two objects or a border contact.
    areas, levels, n_objects, touching = [], set(), [], 0
    for i in range(80):
        scene = synthetic.draw_scene(np.random.default_rng([4, 0, i]), 96)
        assert scene.mask.any() and scene.image.shape == (96, 96, 3)
        areas.append((scene.mask > 0).mean())
        levels.add(scene.difficulty)
        n_objects.append(scene.n_objects)
        touching += bool(scene.mask[0].any() or scene.mask[-1].any() or scene.mask[:, 0].any()
                         or scene.mask[:, -1].any())
    areas = np.array(areas)
    assert 0.01 < np.median(areas) < 0.2
    assert 0.5 < np.mean((areas >= 0.01) & (areas <= 0.2))
    assert levels == set(synthetic.DIFFICULTIES)
    assert 1 in n_objects and 2 in n_objects
    assert 0 < touching < 80


@pytest.mark.parametrize("shape", ["Insect", "Spider", "Lizard", "Stick", "Octopus"])
def test_animal_shapes_have_thin_parts(shape):
    # An opening with a 7 px disk removes legs, antennae, tails and arms: a large share of these masks.
    from datasets.synthetic_shapes import build_figure, render_object

    rng = np.random.default_rng(0)
    mask = render_object(rng, build_figure(rng, shape), 256, 256, 0.08, min_inside=1.0)
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    removed = 1.0 - cv2.countNonZero(opened) / cv2.countNonZero(mask)
    assert removed > 0.05, removed


def test_unknown_shape_is_refused():
    from datasets.synthetic_shapes import build_figure

    with pytest.raises(ValueError, match="Insect"):
        build_figure(np.random.default_rng(0), "Cube")


def test_every_shape_appears_and_rectangular_sizes_work(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", n_train=60, n_test=0, img_size=(32, 64),
                                   progress=False, noncam_fraction=0.0)
    names = [p.name for p in (root / "Train" / "Image").iterdir()]
    for shape in synthetic.SHAPES:
        assert any(f"-{shape}-" in n for n in names), shape
    assert cv2.imread(str(root / "Train" / "Image" / sorted(names)[0])).shape == (32, 64, 3)


def test_refuses_non_empty_folder_and_bad_arguments(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="full"):
        write_synthetic_dataset(tmp_path / "full", **SMALL)
    with pytest.raises(ValueError):
        write_synthetic_dataset(tmp_path / "neg", n_train=-1, progress=False)
    with pytest.raises(ValueError):
        write_synthetic_dataset(tmp_path / "tiny", img_size=8, progress=False)


def test_ensure_generates_once_into_env_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    params = dict(n_train=3, n_test=2, img_size=32, seed=1, progress=False)
    root = ensure_synthetic_dataset(**params)
    assert root.parent == tmp_path / "cache" and root.name.startswith("synthetic-")
    assert len(discover_dataset(root).train) == 3

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached set")

    monkeypatch.setattr(synthetic, "write_synthetic_dataset", fail)
    assert ensure_synthetic_dataset(**params) == root  # reused, not regenerated
    monkeypatch.undo()
    other = ensure_synthetic_dataset(cache_dir=tmp_path / "cache", **dict(params, seed=2))
    assert other != root


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    real = synthetic.draw_scene
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "draw_scene", flaky)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path / "cache", n_train=5, n_test=0, img_size=32, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []  # no half set, no temp folder

    monkeypatch.setattr(synthetic, "draw_scene", real)
    root = ensure_synthetic_dataset(tmp_path / "cache", n_train=5, n_test=0, img_size=32, progress=False)
    assert len(list((root / "Train" / "Image").iterdir())) == 5


def test_benchmark_returns_positive_throughput():
    result = benchmark_data_pipeline(img_size=32, n_images=2, src_size=64, num_iters=4)
    assert result["img_per_s"] > 0 and result["n"] == 4
    assert result["img_size"] == 32 and result["src_size"] == 64
    assert result["decode_ms"] > 0 and result["augment_ms"] > 0
    json.dumps(result)  # JSON-able


def test_make_synthetic_refuses_sizes_and_counts_it_cannot_use_before_writing(tmp_path):
    out = tmp_path / "big"
    # 100000 px failed part-way in OpenCV (out of memory) after the split folders were made.
    result = CliRunner().invoke(main, ["make-synthetic", str(out), "--train", "2", "--test", "1",
                                       "--img-size", "100000"])
    assert result.exit_code == 2 and str(synthetic.MAX_IMG_SIZE) in result.output, result.output
    # An empty set is no data set: train needs 2 images (one held out), evaluate a test image.
    for counts in (["--train", "0", "--test", "0"], ["--train", "1", "--test", "1"], ["--train", "2", "--test", "0"]):
        result = CliRunner().invoke(main, ["make-synthetic", str(out), *counts, "--img-size", "32"])
        assert result.exit_code == 2, (counts, result.output)
    assert not out.exists()
    with pytest.raises(ValueError, match=str(synthetic.MAX_IMG_SIZE)):
        write_synthetic_dataset(out, img_size=(32, synthetic.MAX_IMG_SIZE + 1), progress=False)
    assert not out.exists()


def test_failed_generation_removes_only_what_it_created_so_a_retry_works(tmp_path, monkeypatch):
    real = synthetic.draw_scene
    calls = {"n": 0}

    def out_of_memory(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise cv2.error("OpenCV: (-4:Insufficient memory) Failed to allocate 120000000000 bytes")
        return real(*args, **kwargs)

    (tmp_path / "mine").mkdir()  # a folder the user made, beside a file of theirs
    (tmp_path / "notes.txt").write_text("keep")
    outs = (tmp_path / "new" / "set", tmp_path / "mine")
    args = ["--train", "2", "--test", "1", "--img-size", "32", "--workers", "1"]
    monkeypatch.setattr(synthetic, "draw_scene", out_of_memory)
    for out in outs:
        calls["n"] = 0
        result = CliRunner().invoke(main, ["make-synthetic", str(out), *args])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # no traceback
        assert "Insufficient memory" in result.output and "run again" in result.output
    # Gone: the folders the calls made (new/ and new/set/); kept, empty: the user's mine/ and file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]
    assert list((tmp_path / "mine").iterdir()) == [] and (tmp_path / "notes.txt").read_text() == "keep"
    monkeypatch.setattr(synthetic, "draw_scene", real)
    for out in outs:
        result = CliRunner().invoke(main, ["make-synthetic", str(out), *args])
        assert result.exit_code == 0, result.output  # the retry is not refused as "not empty"
        assert json.loads((out / "synthetic.json").read_text())["n_train"] == 2
