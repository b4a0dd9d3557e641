"""One train process per run folder: an atomic OS lock, never blocked by a dead or unrelated owner."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest

from _train_helpers import REPO, TINY_ARGS, make_dataset, run_subprocess, subprocess_env, train_cmd
from engine.training.run_folder import (
    RUN_LOCK,
    START_MARKER,
    RunFolderError,
    claim_run_folder,
    prepare_run_folder,
    release_run_folder,
)

_HOLD = ("import sys, time\nfrom engine.training.run_folder import claim_run_folder\n"
         "claim_run_folder(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(120)\n")


def _holder(folder):
    """A process that holds ``folder``'s lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _claim_behind(barrier, folder, results):
    barrier.wait()
    try:
        claim_run_folder(folder)
        results.put(("won", os.getpid()))
    except RunFolderError as exc:
        results.put(("lost", str(exc)))


def test_starts_at_the_same_instant_give_the_folder_to_exactly_one(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for trial in range(5):
        folder, barrier, results = tmp_path / f"run{trial}", ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_claim_behind, args=(barrier, folder, results)) for _ in range(4)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        winners = [pid for kind, pid in outcomes if kind == "won"]
        assert len(winners) == 1, outcomes
        assert all(f"pid {winners[0]}" in text for kind, text in outcomes if kind == "lost")


def test_a_live_run_is_refused_even_with_overwrite_and_nothing_of_it_is_removed(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        (folder / "train.log").write_text("a run that has not saved yet\n")
        for resuming, overwrite in ((False, False), (False, True), (True, False)):
            with pytest.raises(RunFolderError, match=f"pid {holder.pid}"):
                prepare_run_folder(folder, resuming, overwrite, log=lambda m: None)
        assert (folder / "train.log").exists() and (folder / RUN_LOCK).exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (folder / RUN_LOCK).exists()  # left behind, but no longer locked
    prepare_run_folder(folder, False, False, log=lambda m: None)
    assert json.loads((folder / RUN_LOCK).read_text())["pid"] == os.getpid()
    release_run_folder(folder)
    assert not (folder / RUN_LOCK).exists()


def test_a_lock_file_naming_a_live_unrelated_process_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    # pid 1 is alive in every container, and is no train run: the lock file alone proves nothing.
    (folder / RUN_LOCK).write_text(json.dumps({"pid": 1, "host": os.uname().nodename}))
    prepare_run_folder(folder, False, False, log=lambda m: None)
    release_run_folder(folder)


def test_release_leaves_a_lock_this_process_does_not_hold(tmp_path):
    folder = tmp_path / "theirs"
    holder = _holder(folder)
    try:
        release_run_folder(folder)
        assert (folder / RUN_LOCK).exists()
    finally:
        holder.kill()
        holder.wait()


def test_files_of_a_failed_start_are_removed_but_the_users_own_are_refused(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for folder in (ours, theirs):
        (folder / "tensorboard").mkdir(parents=True)
        for name in ("config.yaml", "train.log", "metrics.jsonl"):
            (folder / name).write_text("x\n")
    (ours / START_MARKER).write_text("{}\n")  # what a start of this project writes before any run file
    prepare_run_folder(ours, False, False, log=lambda m: None)
    release_run_folder(ours)
    assert not any((ours / n).exists() for n in ("config.yaml", "train.log", "metrics.jsonl", "tensorboard"))
    with pytest.raises(RunFolderError) as refused:
        prepare_run_folder(theirs, False, False, log=lambda m: None)
    assert all(name in str(refused.value) for name in ("config.yaml", "train.log", "metrics.jsonl", "tensorboard"))
    assert (theirs / "config.yaml").read_text() == "x\n" and (theirs / "tensorboard").is_dir()
    assert not (theirs / RUN_LOCK).exists()  # refused: the folder is not left locked


def test_two_train_commands_started_together_one_trains_and_the_other_exits_2(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=8, n_test=2)
    out = tmp_path / "run"
    go = tmp_path / "go"
    wrapper = ("import os, sys, time, runpy\n"
               "while not os.path.exists(sys.argv[1]): time.sleep(0.005)\n"
               "sys.argv = sys.argv[2:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")
    args = [*TINY_ARGS, "--epochs", "1", "--stage1-epochs", "0", "--dataset-path", str(data),
            "--checkpoint-dir", str(out)]
    procs = [subprocess.Popen([sys.executable, "-c", wrapper, str(go), *train_cmd(args)[1:]], cwd=REPO,
                              env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    go.write_text("")  # the barrier: both are started and polling
    results = [proc.communicate(timeout=300) for proc in procs]
    codes = sorted(proc.returncode for proc in procs)
    assert codes == [0, 2], results
    loser = [err for proc, (_, err) in zip(procs, results) if proc.returncode == 2][0]
    winner_pid = [proc.pid for proc in procs if proc.returncode == 0][0]
    assert RUN_LOCK in loser and f"pid {winner_pid}" in loser
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "summary" in r]) == 1  # one run's records, not two mixed
