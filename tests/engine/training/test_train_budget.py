"""Time budgets, wall-time summary, run-folder safety and divergence stops (CPU, tiny runs)."""
import json
import math
import re

import pytest
import torch

from engine.checkpoint import load_checkpoint, model_from_checkpoint
from engine.config import resolve_config
from engine.training.budget import RunCosts, StepTimeProbe, TimeBudget, parse_duration, plan_steps
from engine.training.request import RunRequest
from engine.training.resume import ResumeError
from engine.training.run_folder import RunFolderError, prepare_run_folder
from engine.training.trainer import Trainer
from _train_helpers import TINY_ARGS, load_ckpt, make_dataset, run_cli


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", n_train=8, n_test=2)


def _args(data, out, *extra):
    return ["train", "--dataset-path", str(data), "--checkpoint-dir", str(out), *TINY_ARGS, *extra]


@pytest.mark.parametrize("text, seconds", [("8h30m", 30600), ("90m", 5400), ("240s", 240), ("1h", 3600),
                                           ("1.5h", 5400), ("45", 45), ("1h2m3s", 3723)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "-3m", "0s", "1h foo"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="240s|positive"):
        parse_duration(text)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_schedule_sized_from_measured_step_time():
    clock = FakeClock()
    probe = StepTimeProbe(warmup=2, measure=4, clock=clock)
    probe.mark()
    for dt in (30.0, 5.0, 0.5, 0.5, 0.5, 0.5):  # compile and start-up, then 0.5 s steps
        clock.t += dt
        probe.mark()
    assert probe.ready and probe.seconds_per_step() == pytest.approx(0.5)
    budget = TimeBudget(1000.0, used_s=0.0, margin_s=50.0, clock=clock)
    clock.t += 37.0
    assert budget.left() == pytest.approx(963.0)
    costs = RunCosts(step_s=0.5, val_s=4.0, val_every_s=60.0, save_s=2.0, save_every_s=300.0)
    plan = plan_steps(budget.left(), costs, steps_done=6, stage1_fraction=0.25, warmup_steps=500,
                      margin_s=budget.margin_s)
    # (963 - 50 - 4 - 2) / (1 + 4/60 + 2/300) = 845.0 s of training = 1690 steps of 0.5 s
    assert plan.total_steps == 6 + 1690
    assert plan.stage1_steps == round(0.25 * plan.total_steps)
    assert plan.warmup_steps == plan.total_steps // 10  # capped: 500 would eat a third of the run
    train_time = (plan.total_steps - 6) * 0.5
    validations = math.ceil(train_time / 60.0) + 1
    assert train_time + validations * 4.0 + 2 * 2.0 + 50.0 <= budget.left()
    # the deadline guard: stop once the time left covers only the final validation and saves
    assert not budget.must_stop(reserve_s=6.0)
    clock.t += budget.left() - 20.0
    assert budget.must_stop(reserve_s=6.0)
    # a resumed budget continues where the first session stopped
    resumed = TimeBudget(1000.0, used_s=budget.used(), clock=clock)
    assert resumed.left() == pytest.approx(20.0)


def test_resume_continues_the_saved_schedule_unless_its_length_changes():
    from types import SimpleNamespace

    from engine.settings import ModelSettings, TrainSettings
    from engine.training.setup import _resumed_schedule_sizes, _stage1_epochs

    tcfg = TrainSettings(epochs=4, stage1_epochs=1, warmup_steps=30, adapt_to_budget=True, time_budget=None)
    rt = SimpleNamespace(ctx=SimpleNamespace(world_size=1))
    ckpt = {"scheduler": {"step_count": 1, "total_steps": 204, "stage1_steps": 0, "warmup_steps": 30},
            "config": {"train": tcfg.to_dict()}, "batch_size": 4, "accumulation_steps": 1, "world_size": 1}

    def sizes(t=tcfg, batch=4, budgeted=False, continuing=False):
        return _resumed_schedule_sizes(t, ckpt, rt, batch, 1, budgeted, continuing)

    assert sizes() == (204, 0, 30)  # the first session's schedule, not one rebuilt with a stage 1
    assert sizes(budgeted=True, continuing=True) == (204, 0, 30)  # the rest of the same budget
    assert sizes(tcfg.model_copy(update={"epochs": 8})) is None  # extended: planned again ...
    assert sizes(budgeted=True) is None  # ... and so with a fresh budget or another batch layout
    assert sizes(batch=2) is None
    # ... by the first session's rule: no frozen stage for a backbone without pretrained weights
    assert _stage1_epochs(tcfg, ModelSettings(pretrained=False), None) == 0
    assert _stage1_epochs(tcfg, ModelSettings(pretrained=True), None) == 1
    assert _stage1_epochs(tcfg.model_copy(update={"adapt_to_budget": False}), ModelSettings(pretrained=False), None) == 1


class StepClock:
    """A clock that moves only when a training step runs, by ``step_s``: the run's own time, the same on
    any machine however busy (the budget accounting is what these tests check, not this machine's speed)."""

    def __init__(self, step_s: float):
        self.t, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def step_clock(monkeypatch):
    import engine.training.trainer as trainer_module

    clock = StepClock(1.0)
    real_step, real_trainer = trainer_module.train_step, trainer_module.Trainer

    def timed_step(run, batches):
        real_step(run, batches)
        clock.t += clock.step_s

    class ClockedTrainer(real_trainer):
        def __init__(self, *args, **kwargs):
            kwargs.update(clock=clock, started_at=clock())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", timed_step)
    monkeypatch.setattr(trainer_module, "Trainer", ClockedTrainer)
    return clock


def test_time_budget_run_ends_inside_it_and_resume_continues(tiny_data, tmp_path, step_clock):
    out = tmp_path / "run"
    args = _args(tiny_data, out, "--batch-size", "2", "--epochs", "1000", "--time-budget", "30s",
                 "--set", "train.budget_margin_seconds=5")
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    assert "Time budget:" in result.output and "schedule sized to" in result.output
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = lines[-1]["summary"]
    assert summary["status"] in ("completed", "budget")
    assert summary["total_s"] <= 30.0  # start-up, training, validation and saves inside the budget
    last = load_checkpoint(out / "last.pt")
    assert last["budget"]["seconds"] == 30.0 and 0 < last["budget"]["used_s"] <= 30.0
    assert 0.5 * (30.0 - 5.0) <= last["step"] * step_clock.step_s <= 30.0  # most of the budget went to training
    model_from_checkpoint(out / "best.pt")  # loadable
    # the next session continues the same budget: only what is left of it
    first_steps = last["step"]
    again = run_cli(["train", "--checkpoint-dir", str(out), "--resume", "auto"])
    assert again.exit_code == 0, again.output
    continued = load_checkpoint(out / "last.pt")
    assert continued["budget"]["seconds"] == 30.0 and continued["budget"]["used_s"] <= 30.0 + step_clock.step_s
    # a new --time-budget on the resume command line is a fresh budget for this session
    more = run_cli(["train", "--checkpoint-dir", str(out), "--resume", "auto", "--time-budget", "12s"])
    assert more.exit_code == 0, more.output
    final = load_checkpoint(out / "last.pt")
    assert final["budget"]["seconds"] == 12.0 and final["step"] > max(first_steps, continued["step"])


def test_resume_with_a_fresh_budget_trains_past_the_epochs_schedule(tiny_data, tmp_path, step_clock):
    # A budgeted first session can take more steps than --epochs gives; a resume with a new
    # --time-budget must train on, not stop at once with "Nothing to do".
    out = tmp_path / "run"
    first = run_cli(_args(tiny_data, out, "--batch-size", "2", "--epochs", "1", "--time-budget", "14s",
                          "--set", "train.budget_margin_seconds=4"))
    assert first.exit_code == 0, first.output
    steps = load_checkpoint(out / "last.pt")["step"]
    per_epoch = 3  # 6 training images (two held out) in batches of 2
    assert steps > per_epoch
    more = run_cli(["train", "--checkpoint-dir", str(out), "--resume", "auto", "--time-budget", "10s"])
    assert more.exit_code == 0, more.output
    assert "Nothing to do" not in more.output and "schedule sized to" in more.output
    assert load_checkpoint(out / "last.pt")["step"] > steps


def test_new_run_into_an_existing_run_folder_is_refused(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert run_cli(_args(tiny_data, out, "--epochs", "1", "--stage1-epochs", "0")).exit_code == 0
    before = (out / "best.pt").read_bytes()
    again = run_cli(_args(tiny_data, out, "--epochs", "1", "--stage1-epochs", "0", "--seed", "3"))
    assert again.exit_code == 2
    assert "already holds a run" in again.output and "--resume auto" in again.output and "--overwrite" in again.output
    assert (out / "best.pt").read_bytes() == before  # nothing touched
    # left by kills during atomic writes (engine.files.atomic_open names them .NAME.RANDOM.tmp)
    for name in (".last.pt.abc123.tmp", ".metrics.jsonl.k2j4h5g6.tmp", ".config.yaml.x_1y2z3w.tmp",
                 ".run_summary.json.q9w8e7r6.tmp"):
        (out / name).write_bytes(b"torn")
    (out / "notes.tmp").write_text("not ours")
    replaced = run_cli(_args(tiny_data, out, "--epochs", "1", "--stage1-epochs", "0", "--seed", "3", "--overwrite"))
    assert replaced.exit_code == 0, replaced.output
    assert "--overwrite: removed" in replaced.output
    assert not list(out.glob(".*.tmp"))
    assert (out / "notes.tmp").read_text() == "not ours"
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "summary" in r]) == 1  # one run, not two mixed
    with pytest.raises(RunFolderError):
        prepare_run_folder(out, resuming=False, overwrite=False)


def test_a_start_that_failed_its_checks_does_not_block_the_next(tiny_data, tmp_path):
    out = tmp_path / "run"
    refused = run_cli(_args(tiny_data, out, "--epochs", "1", "--time-budget", "5x"))
    assert refused.exit_code == 2 and "train.time_budget" in refused.output
    assert not out.exists()  # a bad setting is refused before anything is written
    # A start that fails later, in its data checks, has written config.yaml and empty logs.
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = run_cli(["train", "--dataset-path", str(empty), "--checkpoint-dir", str(out), *TINY_ARGS,
                      "--epochs", "1"])
    assert failed.exit_code == 2 and str(empty) in failed.output  # an input error
    assert (out / "config.yaml").is_file() and not (out / "last.pt").exists()  # logs, no saved state
    (out / ".metrics.jsonl.k2j4h5g6.tmp").write_bytes(b"torn")
    # --resume auto finds no last.pt and starts a new run, which is not refused
    result = run_cli(_args(tiny_data, out, "--epochs", "1", "--resume", "auto"))
    assert result.exit_code == 0, result.output
    assert "no last.pt" in result.output and "saved no checkpoint" in result.output
    assert not list(out.glob(".*.tmp"))
    assert (out / "train.log").read_text().count("Data: 6 training") == 1  # the new run's log, not both
    # a folder holding a saved run is still refused
    again = run_cli(_args(tiny_data, out, "--epochs", "1"))
    assert again.exit_code == 2 and "last.pt" in again.output and "best.pt" in again.output  # the files found
    assert "--resume auto" in again.output and "--overwrite" in again.output  # and the two ways on


def test_python_resume_refuses_a_different_model_and_best_pt(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert run_cli(_args(tiny_data, out, "--epochs", "1", "--stage1-epochs", "0")).exit_code == 0
    config = resolve_config(flags={"data.dataset_paths": [str(tiny_data)], "train.checkpoint_dir": str(out),
                                   "model.num_experts": 3, "train.device": "cpu"})
    with pytest.raises(ResumeError) as info:
        Trainer(config, RunRequest(resume=out / "last.pt"), progress=False).fit()
    # names the setting, the checkpoint's value and the new one
    assert re.search(r"model\.num_experts\D+(\d+)\D+(\d+)", str(info.value)).groups() == ("7", "3")
    with pytest.raises(ResumeError, match="inference weights only"):
        Trainer(config, RunRequest(resume=out / "best.pt"), progress=False).fit()


def test_best_score_comes_from_the_best_pt_that_exists(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert run_cli(_args(tiny_data, out, "--epochs", "1", "--stage1-epochs", "0")).exit_code == 0
    (out / "best.pt").unlink()  # as if killed before best.pt was written
    result = run_cli(["train", "--checkpoint-dir", str(out), "--resume", "auto", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "best S-measure none yet" in result.output
    assert (out / "best.pt").is_file()  # the resumed run's first validation writes it again


def test_diverging_run_stops_with_message_and_last_pt(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = run_cli(_args(tiny_data, out, "--batch-size", "2", "--epochs", "20", "--lr", "1e30",
                           "--set", "train.max_nonfinite_steps=2", "--set", "train.grad_clip=0"))
    assert result.exit_code == 1, result.output
    assert "non-finite loss or gradient" in result.output and "Traceback" not in result.output
    last = load_ckpt(out / "last.pt")
    assert last["nonfinite_steps"] >= 2


def test_max_nonfinite_zero_never_stops(tiny_data, tmp_path, monkeypatch):
    import engine.training.step as step_module

    original = step_module.forward_loss

    def always_nan(*args):
        terms, out = original(*args)
        return dict(terms, loss=terms["loss"] * float("nan")), out

    monkeypatch.setattr(step_module, "forward_loss", always_nan)
    out = tmp_path / "run"
    result = run_cli(_args(tiny_data, out, "--batch-size", "2", "--set", "train.max_nonfinite_steps=0"))
    assert result.exit_code == 0, result.output
    last = load_ckpt(out / "last.pt")
    assert last["step"] == 6 and last["nonfinite_steps"] == 6  # every step skipped, none stopped the run
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


def test_short_run_adaptations_are_logged(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = run_cli(_args(tiny_data, out, "--epochs", "1", "--set", "train.adapt_to_budget=true"))
    assert result.exit_code == 0, result.output
    assert "No pretrained backbone" in result.output and "light augmentation" in result.output
    assert load_ckpt(out / "last.pt")["light_augment"] is True
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["stage"] == 2  # no frozen stage from scratch
