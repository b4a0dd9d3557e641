"""``evaluate``: scores equal PySODMetrics run on the saved predictions; JSON, files, categories, errors."""
import json
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics
import pytest
import torch
from click.testing import CliRunner

from _inference_fixtures import COD10K_TEST, make_tiny_checkpoint, write_cod10k_layout, write_scene
from engine.inference.predictor import Predictor, checkpoint_img_size, parse_img_size, parse_tta_scales
from engine.evaluation.metrics import RESULT_KEYS
from train_ultimate import main


def _run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


def _pysod_reference(pred_dir: Path, gt_dir: Path):
    """PySODMetrics run directly on PNG files, the way COD evaluation scripts do it."""
    sm, em, wfm, mae = py_sod_metrics.Smeasure(), py_sod_metrics.Emeasure(), py_sod_metrics.WeightedFmeasure(), py_sod_metrics.MAE()
    fm = py_sod_metrics.FmeasureV2(
        metric_handlers={"fm": py_sod_metrics.FmeasureHandler(with_adaptive=True, with_dynamic=True, beta=0.3)}
    )
    gts = sorted(gt_dir.glob("*.png"))
    for gt_path in gts:
        gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE)
        pred = cv2.imread(str(pred_dir / gt_path.name), cv2.IMREAD_GRAYSCALE)
        assert pred is not None, f"no saved prediction for {gt_path.name}"
        assert pred.shape == gt.shape
        for m in (sm, em, wfm, mae, fm):
            m.step(pred=pred, gt=gt)
    e, f = em.get_results()["em"], fm.get_results()["fm"]
    return len(gts), {
        "Sm": sm.get_results()["sm"], "Em_adp": e["adp"], "Em_mean": e["curve"].mean(), "Em_max": e["curve"].max(),
        "wFm": wfm.get_results()["wfm"], "Fm_adp": f["adaptive"], "Fm_mean": f["dynamic"].mean(),
        "Fm_max": f["dynamic"].max(), "MAE": mae.get_results()["mae"],
    }


def test_evaluate_matches_pysodmetrics_on_saved_predictions(ckpt, cod10k, tmp_path):
    out_json, pred_dir = tmp_path / "scores.json", tmp_path / "preds"
    result = _run(["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(cod10k), "--output-json", str(out_json),
                   "--save-predictions", str(pred_dir), "--batch-size", "2", "--num-workers", "0", "--device", "cpu",
                   "--no-progress"])
    assert result.exit_code == 0, result.output
    scores = json.loads(out_json.read_text())
    assert list(scores) == ["COD10K"]
    res = scores["COD10K"]
    assert set(res) == set(RESULT_KEYS) | {"per_category"}
    assert res["n"] == len(COD10K_TEST)

    # Saved at each GT's own size (none of which is the 64 px network size), named by stem.
    for name, size in COD10K_TEST:
        saved = cv2.imread(str(pred_dir / "COD10K" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert saved is not None and saved.dtype == np.uint8 and saved.shape == size, name

    n, ref = _pysod_reference(pred_dir / "COD10K", cod10k / "Test" / "GT_Object")
    assert n == res["n"]
    for key, value in ref.items():
        assert res[key] == pytest.approx(float(value), rel=1e-9, abs=1e-12), key

    pc = res["per_category"]
    assert set(pc["super_class"]) == {"Aquatic", "Flying", "Terrestrial"}
    assert set(pc["sub_class"]) == {"Flounder", "Crab", "Owl", "Cat"}
    assert pc["super_class"]["Flying"]["n"] == 2 and pc["sub_class"]["Owl"]["n"] == 2
    assert set(pc["super_class"]["Aquatic"]) == set(RESULT_KEYS)

    # Curves next to the JSON, and the table on screen.
    curves = tmp_path / "scores_curves.png"
    assert curves.is_file() and cv2.imread(str(curves)) is not None
    assert "COD10K" in result.output and "Sm" in result.output and "Flying" in result.output


def test_img_size_defaults_to_checkpoint_and_can_be_overridden(ckpt, cod10k, tmp_path):
    from engine.checkpoint import load_checkpoint

    assert checkpoint_img_size(load_checkpoint(ckpt)) == (64, 64)
    assert checkpoint_img_size({"model_config": {}, "model": {}}) == (384, 384)
    result = _run(["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(cod10k), "--img-size", "96",
                   "--num-workers", "0", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "input 96x96" in result.output
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(cod10k),
                                       "--img-size", "50", "--device", "cpu"])
    assert result.exit_code != 0 and "multiple of 32" in result.output


def test_tta_runs_and_is_recorded(ckpt, cod10k, tmp_path):
    out_json = tmp_path / "tta.json"
    result = _run(["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(cod10k), "--tta", "--tta-scales",
                   "1,1.5", "--output-json", str(out_json), "--num-workers", "0", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "TTA" in result.output
    res = json.loads(out_json.read_text())["COD10K"]
    assert res["n"] == len(COD10K_TEST) and 0.0 <= res["Sm"] <= 1.0


def test_dataset_without_test_split_is_reported(ckpt, cod10k, tmp_path):
    train_only = write_cod10k_layout(tmp_path / "TrainOnly" / "COD10K-v3", with_test=False)
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(train_only),
                                       "--device", "cpu", "--no-progress"])
    assert result.exit_code != 0
    assert "no test split" in result.output and str(train_only) in result.output

    # Alongside a dataset that has one: a note, and the other is evaluated.
    out_json = tmp_path / "two.json"
    result = _run(["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(train_only), "--dataset-path",
                   str(cod10k), "--output-json", str(out_json), "--num-workers", "0", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "no test split" in result.output
    assert list(json.loads(out_json.read_text())) == ["COD10K"]


def test_several_test_sets_and_plain_names(ckpt, tmp_path):
    # SINet-V2 style TestDataset/<NAME>/{Imgs,GT}: one entry per test set, no categories for plain names.
    root = tmp_path / "TestDataset"
    for set_name, sizes in (("CAMO", [(50, 70), (64, 64)]), ("CHAMELEON", [(33, 81)])):
        for i, size in enumerate(sizes):
            write_scene(root / set_name / "Imgs" / f"camourflage_{i:05d}.jpg", root / set_name / "GT" / f"camourflage_{i:05d}.png", size, i)
    out_json, pred_dir = tmp_path / "s.json", tmp_path / "p"
    result = _run(["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(root), "--output-json", str(out_json),
                   "--save-predictions", str(pred_dir), "--num-workers", "0", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    scores = json.loads(out_json.read_text())
    assert set(scores) == {"CAMO", "CHAMELEON"}
    assert scores["CAMO"]["n"] == 2 and scores["CHAMELEON"]["n"] == 1
    assert scores["CAMO"]["per_category"] == {}
    assert cv2.imread(str(pred_dir / "CHAMELEON" / "camourflage_00000.png"), cv2.IMREAD_GRAYSCALE).shape == (33, 81)
    assert (pred_dir / "curves.png").is_file() or (tmp_path / "s_curves.png").is_file()


def test_without_dataset_path_uses_the_runs_synthetic_test_set(tmp_path, monkeypatch):
    # The checkpoint's run config names the synthetic set it trained on; evaluate scores its test split,
    # generated in this machine's cache (never the cache_dir the checkpoint stored).
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    synthetic = {"n_train": 2, "n_test": 3, "img_size": 48, "seed": 1, "cache_dir": str(tmp_path / "stored")}
    ckpt = make_tiny_checkpoint(tmp_path / "syn.pt", data_config={"synthetic": synthetic})
    out_json = tmp_path / "syn.json"
    result = _run(["evaluate", "--checkpoint", str(ckpt), "--output-json", str(out_json), "--num-workers", "0",
                   "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "synthetic test set" in result.output and str(tmp_path / "cache") in result.output
    assert not (tmp_path / "stored").exists()
    (name, res), = json.loads(out_json.read_text()).items()
    assert name == "synthetic" and res["n"] == 3  # never labelled COD10K
    assert "\nsynthetic " in result.output and "\nCOD10K " not in result.output
    assert set(res["per_category"]["super_class"]) <= {"Synthetic", "Background"}


def test_missing_checkpoint_and_dataset_errors(ckpt, tmp_path):
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset-path", str(tmp_path)])
    assert r.exit_code != 0 and "Checkpoint not found" in r.output
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(tmp_path / "missing"),
                                  "--device", "cpu"])
    assert r.exit_code != 0 and "does not exist" in r.output


@pytest.mark.parametrize("scales", ["abc", "0", "inf"])
def test_bad_tta_scales_are_usage_errors(tmp_path, scales):
    # Checked before the checkpoint is opened (it does not exist here): exit code 2, the option named.
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--tta-scales", scales])
    assert r.exit_code == 2 and "--tta-scales" in r.output, r.output
    assert "nope.pt" not in r.output


def test_predictor_tta_is_exact_for_flip_equivariant_model():
    # A 1x1 convolution treats every pixel alike, so flip TTA must return exactly the plain prediction.
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 1, 1).eval()
    x = torch.randn(2, 3, 64, 96)
    plain = Predictor(model, torch.device("cpu")).probabilities(x)
    flipped = Predictor(model, torch.device("cpu"), hflip=True).probabilities(x)
    assert plain.shape == (2, 1, 64, 96)
    assert torch.allclose(plain, flipped, atol=1e-6)
    # Position-dependent model: TTA is the mean of the plain view and the un-flipped flipped view.
    ramp = torch.linspace(-3, 3, 96)

    class Ramp(torch.nn.Module):
        def forward(self, images):
            return images[:, :1] * 0 + ramp

    tta = Predictor(Ramp(), torch.device("cpu"), hflip=True).probabilities(x)
    expected = (torch.sigmoid(ramp) + torch.sigmoid(ramp).flip(0)) / 2
    assert torch.allclose(tta[0, 0, 0], expected, atol=1e-6)
    scaled = Predictor(model, torch.device("cpu"), scales=(0.5, 1.0, 1.5)).probabilities(x)
    assert scaled.shape == plain.shape and torch.isfinite(scaled).all()
    sized = Predictor(model, torch.device("cpu")).predict_sizes(x, [(50, 70), (33, 100)])
    assert [tuple(p.shape) for p in sized] == [(50, 70), (33, 100)]


def test_size_and_scale_parsing():
    assert parse_img_size("384") == (384, 384)
    assert parse_img_size("320x448") == (320, 448)
    assert parse_img_size([64, 96]) == (64, 96)
    with pytest.raises(ValueError, match="Consider 384 or 416"):
        parse_img_size(400)
    assert parse_tta_scales("0.75,1,1.25") == (0.75, 1.0, 1.25)
    with pytest.raises(ValueError):
        parse_tta_scales("0,1")


def test_metric_worker_processes_give_identical_scores(ckpt, cod10k, tmp_path):
    from engine.evaluation.evaluate import evaluate_checkpoint

    kwargs = dict(device="cpu", num_workers=0, progress=False, log=lambda *_: None)
    inline = evaluate_checkpoint(ckpt, [cod10k], metric_workers=0, **kwargs)["COD10K"].metrics
    pooled = evaluate_checkpoint(ckpt, [cod10k], metric_workers=2, **kwargs)["COD10K"].metrics
    assert pooled == inline  # gathered in sample order: bit-identical means


def test_bad_files_and_size_mismatch(ckpt, tmp_path):
    root = tmp_path / "CAMO"
    write_scene(root / "Image" / "ok.jpg", root / "GT" / "ok.png", (50, 70), 0)
    # Image smaller than its mask: scored at the mask's size (the GT is never resized).
    write_scene(root / "Image" / "small.jpg", None, (40, 60), 1)
    write_scene(tmp_path / "big_mask_img.png", root / "GT" / "small.png", (80, 120), 1)
    (root / "Image" / "broken.jpg").write_bytes(b"not an image at all")
    write_scene(tmp_path / "unused.png", root / "GT" / "broken.png", (30, 30), 2)

    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(root),
                                  "--device", "cpu", "--num-workers", "0", "--no-progress"])
    assert r.exit_code != 0 and "broken.jpg" in r.output and "--skip-bad-samples" in r.output

    out_json, preds = tmp_path / "s.json", tmp_path / "p"
    r = _run(["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(root), "--skip-bad-samples",
              "--output-json", str(out_json), "--save-predictions", str(preds), "--device", "cpu",
              "--num-workers", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "skipped 1 sample" in r.output and "differ in size" in r.output
    (name, res), = json.loads(out_json.read_text()).items()
    assert res["n"] == 2
    assert cv2.imread(str(preds / name / "small.png"), cv2.IMREAD_GRAYSCALE).shape == (80, 120)


def test_empty_image_mask_folders_are_called_empty(ckpt, tmp_path):
    empty = tmp_path / "empty_pairs"
    (empty / "Image").mkdir(parents=True)
    (empty / "GT").mkdir()
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(empty),
                                       "--device", "cpu", "--no-progress"])
    assert result.exit_code != 0
    assert "hold no images" in result.output and "no test split" not in result.output
