"""A run's weights do not depend on when it validated or was interrupted; a signal at the end saves it."""
import json
import os
import signal

import pytest
import torch

import engine.training.trainer as trainer_module
from _train_helpers import TINY_ARGS, load_ckpt, make_dataset, run_cli, sigterm_after_step
from engine.training.run_folder import RUN_LOCK

# 6 training images at batch 2: 3 steps an epoch; 3 epochs, validated at the end of every one.
THREE_EPOCHS = ["--batch-size", "2", "--epochs", "3", "--stage1-epochs", "1", "--seed", "5", "--use-ema"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", n_train=8, n_test=2)


def _args(data, out, *extra):
    return ["train", "--dataset-path", str(data), "--checkpoint-dir", str(out), *TINY_ARGS, *THREE_EPOCHS, *extra]


def _same_weights(a, b):
    for key in ("model", "ema"):
        different = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
        assert not different, f"{key}: {len(different)} tensors differ, e.g. {different[:3]}"


def test_validating_more_often_does_not_change_the_weights(tiny_data, tmp_path):
    every_epoch = run_cli(_args(tiny_data, tmp_path / "often"))
    only_at_the_end = run_cli(_args(tiny_data, tmp_path / "once", "--set", "train.val_every_seconds=1e9"))
    assert every_epoch.exit_code == 0 and only_at_the_end.exit_code == 0
    validations = [len((tmp_path / name / "metrics.jsonl").read_text().splitlines()) for name in ("often", "once")]
    assert validations[0] > validations[1]  # the schedules really differ
    _same_weights(load_ckpt(tmp_path / "often" / "last.pt"), load_ckpt(tmp_path / "once" / "last.pt"))


def test_runs_stopped_anywhere_and_resumed_end_with_the_uninterrupted_weights(tiny_data, tmp_path, monkeypatch):
    assert run_cli(_args(tiny_data, tmp_path / "ref")).exit_code == 0
    reference = load_ckpt(tmp_path / "ref" / "last.pt")
    for stop_step in (2, 4, 7):  # inside epoch 1, after the first validation, after the second
        out = tmp_path / f"stopped_at_{stop_step}"
        sigterm_after_step(monkeypatch, stop_step)
        first = run_cli(_args(tiny_data, out))
        monkeypatch.undo()
        assert first.exit_code == 0 and load_ckpt(out / "last.pt")["step"] == stop_step
        second = run_cli(["train", "--checkpoint-dir", str(out), "--resume", "auto"])
        assert second.exit_code == 0, second.output
        resumed = load_ckpt(out / "last.pt")
        assert resumed["step"] == reference["step"] == 9
        _same_weights(reference, resumed)


def test_a_signal_during_the_final_validation_saves_last_pt_and_the_resume_validates(tiny_data, tmp_path,
                                                                                       monkeypatch):
    out = tmp_path / "run"
    original, calls = trainer_module.validate, []

    def validate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the final one: epochs 1 and 2 were validated inside the loop
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "validate", validate)
    first = run_cli(_args(tiny_data, out))
    monkeypatch.undo()
    assert first.exit_code == 0 and "SIGTERM" in first.output
    saved = load_ckpt(out / "last.pt")
    assert saved["step"] == 9 and saved["metrics"]["step"] == 6  # last.pt holds every step; no final record yet
    assert not (out / RUN_LOCK).exists()
    steps = [json.loads(x).get("step") for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert 9 not in steps

    second = run_cli(["train", "--checkpoint-dir", str(out), "--resume", "auto"])
    assert second.exit_code == 0, second.output
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "summary" not in r][-1] == 9
    assert load_ckpt(out / "last.pt")["metrics"]["step"] == 9
