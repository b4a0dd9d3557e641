"""Bad values, bad checkpoints, full disks and no network end in one clear message, never a traceback.

Each case asserts the exit code (2: a value, path or input file to fix; 1: a runtime failure), the message's
key words, and what is on disk afterwards.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _inference_fixtures import make_tiny_checkpoint, write_scene
from _train_helpers import REPO, TINY_ARGS, run_cli, subprocess_env

# The tiny run of the training tests on a 1-step synthetic set.
FAST = [*TINY_ARGS, "--epochs", "1", "--stage1-epochs", "0", "--set", "model.dim=16",
        "--set", "data.synthetic.n_train=8", "--set", "data.synthetic.n_test=2",
        "--set", "data.synthetic.img_size=64"]


def _train(tmp_path, *extra):
    return run_cli(["train", *FAST, "--checkpoint-dir", str(tmp_path / "run"), *extra])


@pytest.mark.parametrize("args, words", [
    (["--device", "foo"], ["train.device", "'foo'", "cuda:N"]),
    (["--lr", "nan"], ["train.lr", "nan", "> 0"]),
    (["--set", "eval.batch_size=0"], ["eval.batch_size", ">= 1"]),
    (["--seed", str(2**40)], ["train.seed", str(2**32 - 1)]),
    (["--set", "train.betas=[2,3]"], ["train.betas", "[0, 1)"]),
    (["--set", "data.augment.rotate_p=5"], ["data.augment.rotate_p", "in [0, 1]"]),
    (["--weight-decay", "-1"], ["train.weight_decay", ">= 0"]),
    (["--set", "train.warmup_steps=-3"], ["train.warmup_steps", ">= 0"]),
])
def test_bad_training_values_are_usage_errors(tmp_path, args, words):
    r = _train(tmp_path, *args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for word in words:
        assert word in r.output, (word, r.output)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_inference_device_typo_is_a_usage_error(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "best.pt")
    r = run_cli(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                 "--device", "foo"])
    assert r.exit_code == 2 and "'foo'" in r.output and "cuda:N" in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, option", [
    (["info"], "--json"),
    (["benchmark", "--device", "cpu"], "--json"),
    (["evaluate", "--checkpoint", "CKPT"], "--output-json"),
    (["export", "--checkpoint", "CKPT", "--output", "OUT"], "--json"),
    (["export", "--checkpoint", "CKPT"], "--output"),
])
def test_unwritable_output_file_is_refused_before_any_work(tmp_path, command, option):
    ckpt = make_tiny_checkpoint(tmp_path / "best.pt")
    args = [str(ckpt) if a == "CKPT" else str(tmp_path / "m.onnx") if a == "OUT" else a for a in command]
    for target, words in (("/proc/camoxpert/out.json", ["cannot write", "/proc/camoxpert/out.json"]),
                          (str(tmp_path), ["is a directory"])):  # click's own check of a folder
        r = run_cli([*args, option, target])
        assert r.exit_code == 2, r.output
        assert option in r.output and all(w in r.output for w in words), r.output
    assert not (tmp_path / "m.onnx").exists()


def test_checkpoint_dir_that_is_a_file_or_below_one(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    for value in (blocker, blocker / "sub"):
        r = run_cli(["train", *FAST, "--set", f"train.checkpoint_dir={value}"])
        assert r.exit_code == 2, r.output
        assert str(blocker) in r.output and "is a file" in r.output and "folder" in r.output
    assert blocker.read_text() == "keep me"


def test_text_file_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello, these are notes\n")
    r = run_cli(["evaluate", "--checkpoint", str(text), "--device", "cpu"])
    assert r.exit_code == 2
    assert "not a checkpoint file" in r.output and "pickled" not in r.output and str(text) in r.output


def _wrong_shape_checkpoint(path: Path) -> Path:
    ckpt = torch.load(make_tiny_checkpoint(path), weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.ndim == 4)
    ckpt["model"][name] = torch.zeros(3, 3, 1, 1)
    torch.save(ckpt, path)
    return path


def _wrong_type_checkpoint(path: Path) -> Path:
    ckpt = torch.load(make_tiny_checkpoint(path), weights_only=True)
    ckpt["config"]["data"]["img_size"] = "big"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("make, words", [
    (_wrong_shape_checkpoint, ["do not fit", "shape"]),
    (_wrong_type_checkpoint, ["config.data.img_size", "'big'"]),
])
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_damaged_checkpoint_for_inference(tmp_path, make, words, command):
    ckpt = make(tmp_path / "best.pt")
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--device", "cpu"]
    if command == "predict":
        write_scene(tmp_path / "img" / "a.jpg", None, (64, 64), seed=0)
        args += ["--input", str(tmp_path / "img"), "--output", str(out)]
    else:
        args += ["--dataset-path", str(tmp_path), "--output-json", str(out / "scores.json")]
    r = run_cli([command, *args])
    assert r.exit_code == 2, r.output
    assert str(ckpt) in r.output and "Traceback" not in r.output
    for word in words:
        assert word in r.output, (word, r.output)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["shape", "type"])
def test_damaged_checkpoint_for_resume(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    assert _train(tmp_path).exit_code == 0
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    if damage == "shape":
        name = next(k for k, v in ckpt["model"].items() if v.ndim == 4)
        ckpt["model"][name] = torch.zeros(3, 3, 1, 1)
    else:
        ckpt["config"]["train"]["epochs"] = "many"
    torch.save(ckpt, tmp_path / "damaged.pt")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    r = run_cli(["train", *FAST, "--checkpoint-dir", str(tmp_path / "run2"), "--resume", str(tmp_path / "damaged.pt")])
    assert r.exit_code == 2, r.output
    assert "damaged.pt" in r.output and "Traceback" not in r.output
    assert ("do not fit" in r.output) if damage == "shape" else ("config.train.epochs" in r.output)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == before
    assert not (tmp_path / "run2" / "last.pt").exists()


def test_flash_attention_script_damaged_checkpoint(tmp_path):
    ckpt = _wrong_shape_checkpoint(tmp_path / "best.pt")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "test_flash_attention.py"), "--checkpoint", str(ckpt),
                          "--device", "cpu"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "do not fit" in out.stderr and str(ckpt) in out.stderr


def test_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import shutil

    from engine.files import DiskFullError, atomic_torch_save

    target = tmp_path / "last.pt"
    atomic_torch_save({"v": 1}, target)

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    # torch's error names no cause: only low free space makes it a full disk.
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(2**40, 2**40 - 2**20, 2**20))
    with pytest.raises(DiskFullError, match="disk is full") as info:
        atomic_torch_save({"v": 2}, target)
    assert str(target) in str(info.value) and "1 MiB free" in str(info.value)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_full_disk_during_training_is_a_message(tmp_path, monkeypatch):
    import errno
    import os

    real_fsync = os.fsync

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    r = _train(tmp_path)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert r.exit_code == 1, r.output
    assert "disk is full" in r.output and str(tmp_path / "run") in r.output
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_resume_writes_next_to_the_resumed_checkpoint_not_the_stored_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    assert _train(tmp_path).exit_code == 0
    run = tmp_path / "run"
    # The stored config points at another folder that holds someone's config.yaml.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.yaml").write_text("precious: true\n")
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["config"]["train"]["checkpoint_dir"] = str(elsewhere)
    ckpt["config"]["train"]["epochs"] = 2
    torch.save(ckpt, run / "last.pt")
    r = run_cli(["train", *FAST, "--epochs", "2", "--resume", str(run / "last.pt")])
    assert r.exit_code == 0, r.output
    assert f"writing into {run}" in r.output
    assert (elsewhere / "config.yaml").read_text() == "precious: true\n"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["config.yaml"]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] >= 1


def test_resume_into_a_folder_holding_another_run_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    assert _train(tmp_path).exit_code == 0
    other = tmp_path / "other"
    assert run_cli(["train", *FAST, "--checkpoint-dir", str(other)]).exit_code == 0
    before = (other / "last.pt").read_bytes()
    r = run_cli(["train", *FAST, "--checkpoint-dir", str(other), "--resume", str(tmp_path / "run" / "last.pt")])
    assert r.exit_code == 2 and "another run" in r.output and "--overwrite" in r.output
    assert (other / "last.pt").read_bytes() == before


def test_evaluate_uses_this_machines_cache_not_the_stored_one(tmp_path, monkeypatch):
    stored = tmp_path / "stored-cache"
    mine = tmp_path / "my-cache"
    monkeypatch.setenv("CAMOXPERT_CACHE", str(mine))
    ckpt = make_tiny_checkpoint(tmp_path / "best.pt", data_config={
        "synthetic": {"n_train": 2, "n_test": 2, "img_size": 64, "seed": 0, "cache_dir": str(stored)}})
    r = run_cli(["evaluate", "--checkpoint", str(ckpt), "--device", "cpu", "--no-progress", "--metric-workers", "0"])
    assert r.exit_code == 0, r.output
    assert not stored.exists()
    assert any(mine.iterdir()) and str(mine) in r.output


def test_offline_pretrained_fails_at_once_with_the_fix(tmp_path, monkeypatch):
    import time

    import huggingface_hub.constants

    import models.backbone as backbone

    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise OSError("Network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(backbone, "_hub_reachable_cache", None)
    monkeypatch.setattr("socket.create_connection", no_network)
    started = time.perf_counter()
    for _ in range(2):
        with pytest.raises(backbone.PretrainedWeightsError) as info:
            backbone.build_backbone("edgenext_xx_small", pretrained=True)
    assert time.perf_counter() - started < 15
    assert len(calls) == 1  # probed once per process
    message = str(info.value)
    assert "cannot reach" in message and "--pretrained-weights FILE" in message and "--no-pretrained" in message
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # the offline switch is restored


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_unreadable_gt_folder(tmp_path, monkeypatch, command):
    import os

    from _inference_fixtures import write_cod10k_layout

    import datasets.image_folders as image_folders

    root = write_cod10k_layout(tmp_path / "COD10K-v3", n_train=4)
    gt = next(p for p in root.rglob("GT_Object") if p.parent.name == ("Test" if command == "evaluate" else "Train"))
    real_scandir = os.scandir

    def scandir(path="."):  # as root, chmod 000 does not stop reading, so the refusal is simulated
        if Path(path) == gt:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(image_folders.os, "scandir", scandir)
    out = tmp_path / "out"
    if command == "evaluate":
        ckpt = make_tiny_checkpoint(tmp_path / "best.pt")
        r = run_cli(["evaluate", "--checkpoint", str(ckpt), "--device", "cpu", "--dataset-path", str(root),
                     "--output-json", str(out / "scores.json")])
    else:
        r = run_cli(["train", *FAST, "--checkpoint-dir", str(out), "--dataset-path", str(root)])
    assert r.exit_code == 2, r.output
    assert str(gt) in r.output and "permission denied" in r.output and "chmod" in r.output
    assert not (out / "scores.json").exists() and not (out / "last.pt").exists()


@pytest.mark.parametrize("command", ["train", "predict"])
def test_pinned_attention_kernel_that_cannot_run_here(tmp_path, monkeypatch, command):
    # The efficient kernel is CUDA-only: on this CPU the first forward would end in PyTorch's
    # "No viable backend" traceback; the commands refuse at start instead, naming the fix.
    monkeypatch.setenv("TORCH_SDPA_BACKEND", "efficient")
    if command == "train":
        r = _train(tmp_path)
        expected_code = 2
    else:
        ckpt = make_tiny_checkpoint(tmp_path / "best.pt")
        write_scene(tmp_path / "img" / "a.jpg", None, (64, 64), seed=0)
        r = run_cli(["predict", "--checkpoint", str(ckpt), "--device", "cpu", "--input", str(tmp_path / "img"),
                     "--output", str(tmp_path / "out")])
        expected_code = 2
    assert r.exit_code == expected_code, r.output
    for word in ("efficient", "TORCH_SDPA_BACKEND=efficient", "cannot run on cpu", "Use auto"):
        assert word in r.output, (word, r.output)
    assert "Traceback" not in r.output and "No viable backend" not in r.output
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "out").exists()
