"""Writes that fail or get interrupted: a Ctrl-C during a checkpoint save, read-only folders.

A checkpoint write is never cut in half by a signal, only a real ENOSPC/EDQUOT (or an unexplained
failure with little free space) is called a full disk, a cosmetic file that cannot be written
(curves.png, TensorBoard, train.log) is a warning, and a checkpoint or metrics.jsonl that cannot
be written stops the run with a message naming the file.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile

import pytest
import torch

from _train_helpers import TINY_ARGS, run_cli
from engine.files import DiskFullError, FileWriteError, atomic_torch_save, atomic_write_text
from engine.training.reporting import RunReporter
from engine.training.signals import GracefulStop, deferred_signals

FAST = [*TINY_ARGS, "--epochs", "1", "--stage1-epochs", "0", "--set", "model.dim=16",
        "--set", "data.synthetic.n_train=8", "--set", "data.synthetic.n_test=2",
        "--set", "data.synthetic.img_size=64"]

REAL_SAVE = torch.save


class _FailingFile:
    """A file object whose ``after``-th write raises ``error`` (torch.save writes through it)."""

    def __init__(self, fh, error: BaseException, after: int = 2):
        self.fh, self.error, self.after, self.writes = fh, error, after, 0

    def write(self, data):
        self.writes += 1
        if self.writes == self.after:
            raise self.error
        return self.fh.write(data)

    def flush(self):
        self.fh.flush()


def _save_failing_with(error: BaseException):
    """A ``torch.save`` whose file write raises ``error`` mid-way, as a real disk or Ctrl-C would."""
    return lambda obj, fh: REAL_SAVE(obj, _FailingFile(fh, error))


def _only_the_old_file(folder, name="last.pt"):
    return [p.name for p in folder.iterdir()] == [name] and torch.load(folder / name, weights_only=True) == {"v": 1}


# ---------------------------------------------------------------- bug: Ctrl-C while saving
def test_keyboard_interrupt_inside_the_write_is_not_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_torch_save({"v": 1}, target)
    monkeypatch.setattr(torch, "save", _save_failing_with(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"v": 2}, target)
    monkeypatch.undo()
    assert _only_the_old_file(tmp_path)


@pytest.fixture(autouse=True)
def python_ctrl_c_handler():
    """Python's own Ctrl-C handler for these tests, also where the suite was started with SIGINT
    ignored (a background job of a non-interactive shell): the tests raise SIGINT themselves."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_deferred_signals_hold_sigint_until_the_block_ends():
    reached_end = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals() as held:
            signal.raise_signal(signal.SIGINT)
            assert held == [signal.SIGINT]
            reached_end = True
    assert reached_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_during_a_checkpoint_save_waits_for_the_complete_file(tmp_path, monkeypatch):
    def save_then_interrupted(obj, fh):
        signal.raise_signal(signal.SIGINT)  # the impatient second Ctrl-C, mid-write
        REAL_SAVE(obj, fh)

    monkeypatch.setattr(torch, "save", save_then_interrupted)
    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: "stop after this step"
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            atomic_torch_save({"w": torch.arange(1000)}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert torch.equal(torch.load(tmp_path / "last.pt", weights_only=True)["w"], torch.arange(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_first_sigterm_during_a_save_still_requests_a_graceful_stop(tmp_path, monkeypatch):
    def save_then_signalled(obj, fh):
        signal.raise_signal(signal.SIGTERM)
        REAL_SAVE(obj, fh)

    monkeypatch.setattr(torch, "save", save_then_signalled)
    with GracefulStop() as stop:
        atomic_torch_save({"v": 1}, tmp_path / "last.pt")
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert (tmp_path / "last.pt").is_file()


def test_ctrl_c_twice_while_training_saves_last_pt_leaves_it_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))

    def save(obj, fh):
        if obj.get("kind") == "training":  # last.pt (best.pt holds the inference kind)
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        REAL_SAVE(obj, fh)

    monkeypatch.setattr(torch, "save", save)
    r = run_cli(["train", *FAST, "--checkpoint-dir", str(tmp_path / "run")])
    monkeypatch.undo()
    assert r.exit_code == 130, r.output
    assert "disk is full" not in r.output and "--resume auto" in r.output
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] >= 1


@pytest.mark.parametrize("code, full", [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EROFS, False),
                                        (errno.EACCES, False)])
def test_only_enospc_and_edquot_are_a_full_disk(tmp_path, monkeypatch, code, full):
    target = tmp_path / "last.pt"
    atomic_torch_save({"v": 1}, target)
    monkeypatch.setattr(torch, "save", _save_failing_with(OSError(code, os.strerror(code))))
    with pytest.raises(FileWriteError) as info:
        atomic_torch_save({"v": 2}, target)
    monkeypatch.undo()
    assert isinstance(info.value, DiskFullError) == full
    assert info.value.errno == (errno.ENOSPC if full else code)
    assert str(target) in str(info.value) and ("disk is full" in str(info.value)) == full
    assert _only_the_old_file(tmp_path)


def test_unexplained_torch_failure_with_free_space_is_not_a_full_disk(tmp_path, monkeypatch):
    def failed(obj, fh):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", failed)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(2**40, 2**39, 2**39))
    with pytest.raises(FileWriteError) as info:
        atomic_torch_save({"v": 2}, tmp_path / "last.pt")
    assert not isinstance(info.value, DiskFullError) and "disk is full" not in str(info.value)
    assert "unexpected pos" in str(info.value) and str(tmp_path / "last.pt") in str(info.value)


# ---------------------------------------------------------------- bug: read-only folders
def test_atomic_write_into_an_unwritable_folder_names_the_file(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(FileWriteError, match="Permission denied") as info:
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert str(tmp_path / "config.yaml") in str(info.value) and info.value.errno == errno.EACCES


def _readonly_plot(records, path, steps=None):
    raise FileWriteError(errno.EROFS, "read-only")


def test_reporter_warns_once_when_curves_cannot_be_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("engine.training.reporting.plot_training_curves", _readonly_plot)
    reporter = RunReporter(tmp_path, tensorboard=False)
    reporter.records = [{"epoch": 1, "val_Sm": 0.5}]
    reporter.plot()
    reporter.plot()
    out = capsys.readouterr().out
    assert out.count("could not write") == 1 and "curves.png" in out and "Read-only file system" in out
    assert "curves.png" in (tmp_path / "train.log").read_text()


def test_reporter_turns_tensorboard_off_when_it_fails(tmp_path, capsys):
    class BrokenWriter:
        def add_scalar(self, *args):
            raise OSError(errno.EROFS, "Read-only file system")

    reporter = RunReporter(tmp_path, tensorboard=False)
    reporter._tb = BrokenWriter()
    reporter._tensorboard(lambda tb: tb.add_scalar("x", 1.0, 1))
    reporter.close()
    assert reporter._tb is None and "tensorboard" in capsys.readouterr().out


def test_reporter_stops_on_a_metrics_write_failure(tmp_path):
    reporter = RunReporter(tmp_path, tensorboard=False)
    reporter.metrics_path = tmp_path / "missing" / "metrics.jsonl"  # appending there fails like a read-only disk
    with pytest.raises(FileWriteError, match="metrics.jsonl"):
        reporter._append_metrics({"epoch": 1})


def test_training_goes_on_when_curves_cannot_be_written(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("engine.training.reporting.plot_training_curves", _readonly_plot)
    r = run_cli(["train", *FAST, "--checkpoint-dir", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "could not write" in r.output and "curves.png" in r.output and "Traceback" not in r.output
    assert (tmp_path / "run" / "last.pt").is_file()


def test_readonly_checkpoint_write_mid_run_is_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch, "save", _save_failing_with(OSError(errno.EROFS, "Read-only file system")))
    r = run_cli(["train", *FAST, "--checkpoint-dir", str(tmp_path / "run")])
    monkeypatch.undo()
    assert r.exit_code == 1, r.output
    assert "Read-only file system" in r.output and "disk is full" not in r.output and "Traceback" not in r.output
    assert str(tmp_path / "run" / "best.pt") in r.output or str(tmp_path / "run" / "last.pt") in r.output
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_unwritable_checkpoint_dir_is_refused_at_start(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    r = run_cli(["train", *FAST, "--checkpoint-dir", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert str(tmp_path / "run") in r.output and "Read-only file system" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits")
def test_checkpoint_dir_without_write_permission_is_refused_at_start(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        r = run_cli(["train", *FAST, "--checkpoint-dir", str(locked / "run")])
    finally:
        locked.chmod(0o755)
    assert r.exit_code == 2, r.output
    assert str(locked / "run") in r.output and "Traceback" not in r.output
