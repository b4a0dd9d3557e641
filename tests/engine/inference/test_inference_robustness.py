"""predict and evaluate on inputs that break quietly: damaged data, link loops, non-UTF-8 and colliding names."""
import json
import os
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from _inference_fixtures import write_scene
from engine.evaluation.evaluate import evaluate_samples
from engine.inference.predict import output_names
from engine.inference.predictor import Predictor
from test_datasets_robustness import damage_pixel_data
from train_ultimate import main

# A file name that is not valid UTF-8 (Linux file names are bytes).
BAD_NAME = os.fsdecode(b"caf\xe9-\xff")


def _invoke(*args):
    return CliRunner().invoke(main, [*map(str, args), "--device", "cpu", "--num-workers", "0", "--no-progress"])


def _png_names(folder: Path):
    return sorted(os.fsencode(n) for n in os.listdir(folder) if n.endswith(".png"))


def test_colliding_stems_never_overwrite(ckpt, tmp_path):
    for i, rel in enumerate(["a/x.jpg", "b/x.jpg", "c/x-2.jpg", "d/X.png"]):
        write_scene(tmp_path / "in" / rel, None, (40 + i, 50), i)
    out = tmp_path / "out"
    r = _invoke("predict", "--checkpoint", ckpt, "--output", out,
                *[a for d in "abcd" for a in ("--input", tmp_path / "in" / d)])
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in out.glob("*.png"))
    assert len(written) == 4 and "Wrote 4 " in r.output
    assert len({n.lower() for n in written}) == 4  # also on case-insensitive file systems
    # Each mask has its own input's size, so none was overwritten by another.
    heights = sorted(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[0] for p in out.glob("*.png"))
    assert heights == [40, 41, 42, 43]


def test_output_names_are_unique_and_deterministic():
    paths = [Path(p) for p in ["a/x.jpg", "b/x.jpg", "c/x-2.jpg", "d/x-3.png", "e/x.png"]]
    names = output_names(paths)
    assert names == ["x", "x-4", "x-2", "x-3", "x-5"]
    assert output_names(paths) == names


def test_non_utf8_file_name_predict(ckpt, tmp_path):
    folder = tmp_path / "in"
    write_scene(folder / "good.jpg", None, (40, 56), 0)
    write_scene(folder / "other.png", None, (48, 48), 1)
    data = (folder / "good.jpg").read_bytes()
    with open(os.fsencode(folder) + b"/" + os.fsencode(BAD_NAME) + b".jpg", "wb") as fh:
        fh.write(data)
    out = tmp_path / "out"
    r = _invoke("predict", "--checkpoint", ckpt, "--input", folder, "--output", out, "--batch-size", "3", "--overlay")
    assert r.exit_code == 0, r.output
    assert _png_names(out) == sorted([b"good.png", b"other.png", os.fsencode(BAD_NAME) + b".png"])
    mask = np.fromfile(os.fsencode(out) + b"/" + os.fsencode(BAD_NAME) + b".png", np.uint8)
    assert cv2.imdecode(mask, cv2.IMREAD_UNCHANGED).shape == (40, 56)


def test_non_utf8_unreadable_file_is_named_and_others_written(ckpt, tmp_path):
    folder = tmp_path / "in"
    write_scene(folder / "good.jpg", None, (40, 56), 0)
    with open(os.fsencode(folder) + b"/" + os.fsencode(BAD_NAME) + b".png", "wb") as fh:
        fh.write(b"not an image")
    out = tmp_path / "out"
    r = _invoke("predict", "--checkpoint", ckpt, "--input", folder, "--output", out)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "caf\\xe9-\\xff.png" in r.output and "could not be read" in r.output
    assert _png_names(out) == [b"good.png"]


def test_non_utf8_file_name_evaluate_save_predictions(ckpt, tmp_path):
    root = tmp_path / "CAMO"
    write_scene(root / "Image" / "ok.jpg", root / "GT" / "ok.png", (40, 56), 0)
    write_scene(root / "Image" / "tmp.jpg", root / "GT" / "tmp.png", (48, 64), 1)
    for folder, ext in (("Image", ".jpg"), ("GT", ".png")):  # cv2.imwrite itself cannot take such names
        os.rename(root / folder / f"tmp{ext}", root / folder / f"{BAD_NAME}{ext}")
    preds, out_json = tmp_path / "preds", tmp_path / "s.json"
    r = _invoke("evaluate", "--checkpoint", ckpt, "--dataset-path", root, "--save-predictions", preds,
                "--output-json", out_json)
    assert r.exit_code == 0, r.output
    assert _png_names(preds / "CAMO") == sorted([b"ok.png", os.fsencode(BAD_NAME) + b".png"])
    assert json.loads(out_json.read_text())["CAMO"]["n"] == 2


def test_predict_reports_link_loops_and_writes_the_rest(ckpt, tmp_path):
    folder = tmp_path / "in"
    write_scene(folder / "good.jpg", None, (40, 56), 0)
    os.symlink("b.jpg", folder / "a.jpg")
    os.symlink("a.jpg", folder / "b.jpg")
    os.symlink("missing.jpg", folder / "dangling.png")
    out = tmp_path / "out"
    r = _invoke("predict", "--checkpoint", ckpt, "--input", folder, "--output", out)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "3 image(s) could not be read" in r.output
    assert all(n in r.output for n in ("a.jpg", "b.jpg", "dangling.png"))
    assert [p.name for p in out.glob("*.png")] == ["good.png"]


def test_evaluate_with_link_loop_scores_the_rest_and_names_it(ckpt, tmp_path):
    root = tmp_path / "CAMO"
    write_scene(root / "Image" / "ok.jpg", root / "GT" / "ok.png", (40, 56), 0)
    os.symlink("loop2.jpg", root / "Image" / "loop1.jpg")
    os.symlink("loop1.jpg", root / "Image" / "loop2.jpg")
    out_json = tmp_path / "s.json"
    r = _invoke("evaluate", "--checkpoint", ckpt, "--dataset-path", root, "--output-json", out_json)
    assert r.exit_code == 0, r.output
    assert "loop1.jpg" in r.output and "link loop" in r.output
    assert json.loads(out_json.read_text())["CAMO"]["n"] == 1


def test_evaluate_skip_bad_samples_lists_damaged_files_in_json(ckpt, tmp_path):
    root = tmp_path / "CAMO"
    for i in range(3):
        write_scene(root / "Image" / f"s{i}.jpg", root / "GT" / f"s{i}.png", (48, 64), i)
    damage_pixel_data(root / "GT" / "s1.png")
    r = _invoke("evaluate", "--checkpoint", ckpt, "--dataset-path", root)
    assert r.exit_code == 1 and "s1.png" in r.output and "--skip-bad-samples" in r.output
    out_json = tmp_path / "s.json"
    r = _invoke("evaluate", "--checkpoint", ckpt, "--dataset-path", root, "--skip-bad-samples",
                "--output-json", out_json)
    assert r.exit_code == 0, r.output
    res = json.loads(out_json.read_text())["CAMO"]
    assert res["n"] == 2
    assert [Path(s["path"]).name for s in res["skipped_files"]] == ["s1.jpg"]
    assert "s1.png" in res["skipped_files"][0]["reason"]


def test_sample_failing_during_evaluation_is_skipped(tmp_path):
    import torch

    from datasets import discover_dataset

    root = tmp_path / "set"
    for i in range(3):
        write_scene(root / "Image" / f"s{i}.jpg", root / "GT" / f"s{i}.png", (32, 32), i)
    samples = discover_dataset(root).train
    damage_pixel_data(root / "GT" / "s2.png")  # after any check: fails while loading
    model = torch.nn.Conv2d(3, 1, 1)
    predictor = Predictor(model, torch.device("cpu"))
    res = evaluate_samples(predictor, samples, (32, 32), batch_size=2, progress=False, skip_bad=True)
    assert res.metrics["n"] == 2
    assert [p.name for p, _ in res.skipped_files] == ["s2.jpg"]
