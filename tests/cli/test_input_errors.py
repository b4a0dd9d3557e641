"""Bad inputs end in exit 2 with a message naming the file or setting, never a traceback or a wrong result."""
from __future__ import annotations

import shutil
import tempfile

import pytest
import torch

from _datasets_helpers import write_image, write_pairs
from _inference_fixtures import make_tiny_checkpoint, write_cod10k_layout, write_scene
from _train_helpers import TINY_ARGS, run_cli
from datasets import check_splits, discover_dataset
from datasets.leakage import leakage_warning
from datasets.synthetic import CacheFolderError, ensure_synthetic_dataset
from engine.checkpoint import CheckpointError
from engine.inference.api import Segmenter

FAST = [*TINY_ARGS, "--epochs", "1", "--stage1-epochs", "0", "--set", "model.dim=16",
        "--set", "data.synthetic.n_train=8", "--set", "data.synthetic.n_test=2",
        "--set", "data.synthetic.img_size=64"]
TINY_SET = dict(n_train=2, n_test=1, img_size=32, progress=False)


def test_cache_variable_naming_a_file_is_refused_by_name(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "a_file"))
    with pytest.raises(CacheFolderError, match="CAMOXPERT_CACHE"):
        ensure_synthetic_dataset(**TINY_SET)
    result = run_cli(["train", *FAST, "--checkpoint-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "CAMOXPERT_CACHE" in result.output and "Traceback" not in result.output
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_an_unwritable_home_cache_falls_back_to_a_temporary_one(tmp_path, monkeypatch, capsys):
    (tmp_path / "home").write_text("HOME is a file: nothing can be created under it")
    monkeypatch.delenv("CAMOXPERT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = ensure_synthetic_dataset(**TINY_SET)
    assert root.is_relative_to(tmp_path / "tmp") and (root / "Train" / "Image").is_dir()
    assert "CAMOXPERT_CACHE" in capsys.readouterr().err  # the notice says how to keep it


def _nan_checkpoint(path):
    ckpt = torch.load(make_tiny_checkpoint(path), weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and v.numel() > 4)
    ckpt["model"][name][0] = float("nan")
    torch.save(ckpt, path)
    return path, name


def test_weights_holding_nan_are_refused_for_inference(tmp_path):
    ckpt, name = _nan_checkpoint(tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match="NaN or inf") as info:
        Segmenter(ckpt, device="cpu")
    assert name in str(info.value)
    write_scene(tmp_path / "img" / "a.png", None, (40, 40), 0)
    predicted = run_cli(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "img"),
                         "--output", str(tmp_path / "out"), "--device", "cpu", "--no-progress"])
    assert predicted.exit_code == 2 and name in predicted.output and not (tmp_path / "out").exists()
    root = write_cod10k_layout(tmp_path / "data")
    evaluated = run_cli(["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(root), "--device", "cpu",
                         "--no-progress"])
    assert evaluated.exit_code == 2 and "NaN or inf" in evaluated.output


def test_test_images_copied_from_the_training_split_are_named(tmp_path):
    root = write_cod10k_layout(tmp_path / "data", n_train=3)
    train = sorted((root / "Train" / "Image").iterdir())
    test = sorted((root / "Test" / "Image").iterdir())
    copy = root / "Test" / "Image" / "renamed-copy.jpg"
    shutil.copy(train[1], copy)
    shutil.copy(root / "Train" / "GT_Object" / f"{train[1].stem}.png", root / "Test" / "GT_Object" / "renamed-copy.png")
    warning = leakage_warning(discover_dataset(root))
    assert warning is not None and "1 test image" in warning and train[1].name in warning and copy.name in warning
    assert test[0].name not in warning
    ckpt = make_tiny_checkpoint(tmp_path / "best.pt")
    result = run_cli(["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(root), "--device", "cpu",
                      "--no-progress"])
    assert result.exit_code == 0 and "renamed-copy.jpg" in result.output


def test_a_split_without_copies_gets_no_warning(tmp_path):
    assert leakage_warning(discover_dataset(write_cod10k_layout(tmp_path / "data", n_train=3))) is None


def test_a_run_that_skips_bad_samples_does_not_tell_the_user_to_skip_them(tmp_path):
    write_pairs(tmp_path / "set" / "Image", tmp_path / "set" / "GT", ["a", "b", "c"])
    write_image(tmp_path / "set" / "Image" / "no_mask.jpg", seed=9)
    report = check_splits(discover_dataset(tmp_path / "set"), skip_bad_samples=True)[1]
    assert "pass --skip-bad-samples" in report.format()
    assert "pass --skip-bad-samples" not in report.format(skipped=True) and "no_mask.jpg" in report.format(skipped=True)


def test_a_text_file_given_as_checkpoint_is_an_input_error_everywhere(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    write_scene(tmp_path / "img" / "a.png", None, (40, 40), 0)
    for args in (["evaluate", "--checkpoint", str(text), "--device", "cpu"],
                 ["predict", "--checkpoint", str(text), "--input", str(tmp_path / "img"), "--output",
                  str(tmp_path / "out"), "--device", "cpu"],
                 ["export", "--checkpoint", str(text), "--output", str(tmp_path / "m.onnx")],
                 ["train", *FAST, "--checkpoint-dir", str(tmp_path / "run"), "--resume", str(text)]):
        result = run_cli(args)
        assert result.exit_code == 2 and str(text) in result.output, (args[0], result.output)
