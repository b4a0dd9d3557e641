"""End-to-end ``train`` runs on a tiny synthetic set (CPU, 64 px, edgenext_xx_small)."""
import json
import math
import re

import pytest
import torch

from engine.checkpoint import load_checkpoint, model_from_checkpoint
import engine.training.step as step_module
from engine.training.reporting import fmt_loss
from engine.training.trainer import Trainer
from _train_helpers import TINY_ARGS, load_ckpt, make_dataset, run_cli, sigterm_after_step

CHECKPOINT_KEYS = {
    "model_config", "model", "ema", "optimizer", "scheduler", "scaler", "epoch", "step", "rng", "config",
    "metrics", "best_Sm",
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    # 6 training and 2 validation images
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", n_train=8, n_test=2)


def _args(data, out, *extra):
    return ["train", "--dataset-path", str(data), "--checkpoint-dir", str(out), *TINY_ARGS, *extra]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_two_epochs_write_every_artifact(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = run_cli(_args(tiny_data, out, "--use-ema"))
    assert result.exit_code == 0, result.output
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "curves.png"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in lines if "summary" not in r]
    summary = lines[-1]["summary"]  # where the wall time went
    assert summary["status"] == "completed" and summary["step"] == 2
    parts = ("startup_s", "data_wait_s", "steps_s", "validation_s", "checkpoints_s", "teardown_s", "other_s")
    assert sum(summary[k] for k in parts) == pytest.approx(summary["total_s"], abs=0.01)
    assert summary["images_trained"] == 2 * 4 and summary["images_per_wall_s"] > 0
    assert json.loads((out / "run_summary.json").read_text())["total_s"] == summary["total_s"]
    wall = next(line for line in result.output.splitlines() if "Wall time" in line)  # the recorded totals, printed
    assert f"{summary['total_s']:.1f} s" in wall and f"{summary['images_per_wall_s']:.1f} img/s" in wall
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["stage"] for r in records] == [1, 2]  # backbone frozen in epoch 1, then fine-tuned
    for r in records:
        assert 0.0 <= r["val_Sm"] <= 1.0 and 0.0 <= r["val_MAE"] <= 1.0 and math.isfinite(r["train_loss"])
        assert r["val_n"] == 2  # 25% of the 8 training images, never the test split
        assert r["val_source"] == "ema"

    last = load_ckpt(out / "last.pt")  # plain torch.load(weights_only=True)
    assert CHECKPOINT_KEYS <= set(last) and last["kind"] == "training"
    assert last["epoch"] == 2 and last["step"] == 2 and last["batch_in_epoch"] == 0
    assert last["config"]["data"]["img_size"] == 64
    assert last["model_config"]["backbone"] == "edgenext_xx_small"
    assert last["ema"] is not None and last["ema"].keys() == last["model"].keys()
    assert last["optimizer"]["state"], "optimizer moments are saved"
    best = load_ckpt(out / "best.pt")
    assert best["best_Sm"] == pytest.approx(max(r["val_Sm"] for r in records))
    # best.pt: inference only (the EMA weights under "model"), no optimizer state
    assert best["kind"] == "inference" and "optimizer" not in best and best["weights"] == "ema"
    assert (out / "best.pt").stat().st_size < 0.6 * (out / "last.pt").stat().st_size
    best_record = next(r for r in records if r["is_best"] and r["val_Sm"] == best["best_Sm"])
    assert best["step"] == best_record["step"]

    # evaluate/predict rebuild the model from the checkpoint alone
    model = model_from_checkpoint(out / "best.pt")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    assert "Epoch 2 step 2/2" in result.output and "S-measure" in result.output
    for r in records:  # each validation's line shows the losses and scores its record holds
        line = next(x for x in result.output.splitlines() if f"Epoch {r['epoch']} step {r['step']}/2" in x)
        shown = (fmt_loss(r["train_main_loss"]), fmt_loss(r["val_loss"]), fmt_loss(r["train_loss"]), f"{r['val_Sm']:.4f}")
        assert all(value in line for value in shown), (shown, line)
    # router health per MoE layer, shares of routing slots summing to 1
    for r in records:
        assert set(r["router"]) == {"stride32"}
        for stats in r["router"].values():
            assert len(stats["share"]) == 7 and sum(stats["share"].values()) == pytest.approx(1.0, abs=1e-6)
            assert stats["balance_loss"] >= 0
    assert "Router stride32:" in (out / "train.log").read_text()




def test_null_num_workers_picks_them_from_the_cores(tiny_data, tmp_path, monkeypatch):
    import engine.training.loaders as loaders
    import engine.training.setup as setup

    for module in (loaders, setup):
        monkeypatch.setattr(module, "usable_cpus", lambda: 1)
    out = tmp_path / "run"
    # --set wins over the --num-workers 0 of TINY_ARGS; null is the configs' default.
    result = run_cli(_args(tiny_data, out, "--epochs", "1", "--set", "data.num_workers=null"))
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "data.num_workers" in x)  # what null resolved to
    assert re.search(r"(\d+) worker", line).group(1) == "1" and re.search(r"(\d+) usable CPU", line).group(1) == "1"


@pytest.mark.parametrize("accumulation, where", [(1, "mid-epoch"), (2, "epoch boundary")])
def test_interrupted_and_resumed_run_matches_uninterrupted(tiny_data, tmp_path, monkeypatch, accumulation, where):
    # 6 training images, batch 2: 3 batches per epoch, i.e. 3 steps (accumulation 1) or 2 (accumulation 2,
    # the second with a single micro-batch).
    extra = ["--batch-size", "2", "--accumulation-steps", str(accumulation), "--use-ema", "--seed", "7"]
    stop_step = 1
    ref = tmp_path / "ref"
    assert run_cli(_args(tiny_data, ref, *extra)).exit_code == 0

    run = tmp_path / "run"
    sigterm_after_step(monkeypatch, stop_step)
    first = run_cli(_args(tiny_data, run, *extra))
    monkeypatch.undo()
    assert first.exit_code == 0, first.output
    assert "Stopped by SIGTERM" in first.output
    saved = load_checkpoint(run / "last.pt")
    # a single process acts on the signal right after the update it arrived in
    assert saved["step"] == stop_step
    if where == "mid-epoch":
        assert saved["epoch"] == 0 and saved["batch_in_epoch"] == 1
    else:
        assert saved["epoch"] == 0 and saved["batch_in_epoch"] == 2

    second = run_cli(["train", "--checkpoint-dir", str(run), "--resume", "auto"])  # settings from the checkpoint
    assert second.exit_code == 0, second.output
    assert "Resumed at epoch" in second.output

    a, b = load_ckpt(ref / "last.pt"), load_ckpt(run / "last.pt")
    assert a["step"] == b["step"] == {1: 6, 2: 4}[accumulation]
    _assert_same_weights(a["model"], b["model"])
    _assert_same_weights(a["ema"], b["ema"])
    ra = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ra, rb = ([r for r in rs if "summary" not in r] for rs in (ra, rb))
    assert [r["epoch"] for r in rb] == [1, 2]  # no duplicated epochs after resuming
    for x, y in zip(ra, rb):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-6)
        assert x["val_Sm"] == pytest.approx(y["val_Sm"], abs=1e-9)


def test_resumed_run_from_scratch_keeps_the_first_sessions_schedule(tiny_data, tmp_path, monkeypatch):
    # The defaults: stage1_epochs 1, no pretrained weights, adapt_to_budget on, so the first session
    # plans no frozen stage 1. The resumed session must continue that schedule, not rebuild one with a
    # frozen stage 1 (which re-froze the backbone and moved every learning rate).
    extra = ["--batch-size", "2", "--use-ema", "--seed", "7", "--stage1-epochs", "1",
             "--set", "train.adapt_to_budget=true"]
    ref = tmp_path / "ref"
    assert run_cli(_args(tiny_data, ref, *extra)).exit_code == 0
    run = tmp_path / "run"
    sigterm_after_step(monkeypatch, 4)  # in epoch 2, where a rebuilt schedule would be in stage 2 at other rates
    first = run_cli(_args(tiny_data, run, *extra))
    monkeypatch.undo()
    assert first.exit_code == 0 and "Stopped by SIGTERM" in first.output, first.output
    assert "(stage 1: 0 steps)" in first.output and "backbone frozen" not in first.output

    second = run_cli(["train", "--checkpoint-dir", str(run), "--resume", "auto"])
    assert second.exit_code == 0, second.output
    assert "(stage 1: 0 steps)" in second.output and "backbone frozen" not in second.output
    a, b = load_ckpt(ref / "last.pt"), load_ckpt(run / "last.pt")
    assert a["step"] == b["step"] == 6
    _assert_same_weights(a["model"], b["model"])
    _assert_same_weights(a["ema"], b["ema"])
    lr = [[json.loads(x)["lr"] for x in (d / "metrics.jsonl").read_text().splitlines()[:-1]] for d in (ref, run)]
    assert lr[0] == lr[1]

    # extending the finished run plans the schedule again, by the same rule: still no frozen stage
    more = run_cli(["train", "--checkpoint-dir", str(run), "--resume", "auto", "--epochs", "3"])
    assert more.exit_code == 0, more.output
    assert "(stage 1: 0 steps)" in more.output and "backbone frozen" not in more.output
    assert load_ckpt(run / "last.pt")["step"] == 9


def test_resume_refuses_a_different_model(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert run_cli(_args(tiny_data, out, "--epochs", "1", "--stage1-epochs", "0")).exit_code == 0
    result = run_cli(["train", "--checkpoint-dir", str(out), "--resume", "auto", "--num-experts", "3"])
    assert result.exit_code == 2
    # names the setting, the checkpoint's value and the new one
    assert re.search(r"model\.num_experts\D+(\d+)\D+(\d+)", result.output).groups() == ("7", "3")
    # resuming a finished run with more epochs continues it
    result = run_cli(["train", "--checkpoint-dir", str(out), "--resume", str(out / "last.pt"), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert load_ckpt(out / "last.pt")["epoch"] == 2


def test_resume_path_errors(tmp_path):
    result = run_cli(["train", "--checkpoint-dir", str(tmp_path), "--resume", str(tmp_path / "nope.pt")])
    assert result.exit_code == 2 and "no such checkpoint" in result.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_cli(["train", "--checkpoint-dir", str(tmp_path), "--resume", str(bad)])
    assert result.exit_code == 2 and "not a checkpoint file" in result.output and "Traceback" not in result.output
    assert "best.pt" not in result.output and "last.pt" in result.output  # best.pt cannot be resumed
    # a folder: say so, and how to resume the run in it
    result = run_cli(["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output and "no such" not in result.output
    assert f"--resume auto --checkpoint-dir {tmp_path}" in result.output and str(tmp_path / "last.pt") in result.output


def _nan_on(calls_to_poison):
    """A _forward_loss that returns NaN on the given (0-based) calls."""
    original = step_module.forward_loss
    counter = {"n": 0}

    def forward_loss(*args):
        terms, out = original(*args)
        i = counter["n"]
        counter["n"] += 1
        if calls_to_poison is None or i in calls_to_poison:
            terms = dict(terms, loss=terms["loss"] * float("nan"))
        return terms, out

    return forward_loss


def test_nonfinite_steps_are_skipped_and_counted(tiny_data, tmp_path, monkeypatch):
    # batch 2: 3 steps per epoch; poison the second step of epoch 1 and the first of epoch 2
    monkeypatch.setattr(step_module, "forward_loss", _nan_on({1, 3}))
    out = tmp_path / "run"
    result = run_cli(_args(tiny_data, out, "--batch-size", "2"))
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][:-1]
    assert records[-1]["nonfinite_steps"] == 2
    assert [r["skipped_steps"] for r in records] == [1, 1]
    assert all(math.isfinite(r["train_loss"]) for r in records)
    last = load_ckpt(out / "last.pt")
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    assert last["nonfinite_steps"] == 2


def test_repeated_nonfinite_steps_stop_with_checkpoint(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(step_module, "forward_loss", _nan_on(None))
    out = tmp_path / "run"
    result = run_cli(_args(tiny_data, out, "--batch-size", "2", "--set", "train.max_nonfinite_steps=3"))
    assert result.exit_code == 1
    # names the checkpoint kept, how to resume it, and the setting that never stops
    assert f"--resume {out / 'last.pt'}" in result.output and "train.max_nonfinite_steps" in result.output
    assert "Traceback" not in result.output
    last = load_ckpt(out / "last.pt")
    assert last["step"] == 3 and last["nonfinite_steps"] == 3
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
