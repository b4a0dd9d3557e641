"""A folder a live ``train`` process writes into is refused to a second start, before any checkpoint."""
import json
import socket
import subprocess
import sys

import pytest

from engine.training.resume import RUN_LOCK, RunFolderError, prepare_run_folder, release_run_folder


def _lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_LOCK).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))


def test_live_run_without_checkpoint_is_refused_even_with_overwrite(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path / "run", other.pid)
        (tmp_path / "run" / "train.log").write_text("a run that has not saved yet\n")
        for resuming, overwrite in ((False, False), (False, True), (True, False)):
            with pytest.raises(RunFolderError, match=f"pid {other.pid}"):
                prepare_run_folder(tmp_path / "run", resuming, overwrite, log=lambda m: None)
        assert (tmp_path / "run" / "train.log").exists()  # nothing of the live run was removed
    finally:
        other.kill()
        other.wait()


def test_stale_or_foreign_lock_is_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for folder, host in ((tmp_path / "killed", None), (tmp_path / "copied", "another-machine")):
        _lock(folder, dead.pid if host is None else 1, host)
        prepare_run_folder(folder, False, False, log=lambda m: None)
        assert json.loads((folder / RUN_LOCK).read_text())["pid"] != (dead.pid if host is None else 1)
        release_run_folder(folder)
        assert not (folder / RUN_LOCK).exists()


def test_a_new_folder_is_claimed_and_someone_elses_lock_is_kept(tmp_path):
    prepare_run_folder(tmp_path / "new", False, False, log=lambda m: None)
    assert (tmp_path / "new" / RUN_LOCK).exists()
    _lock(tmp_path / "theirs", 1)
    release_run_folder(tmp_path / "theirs")  # not ours: left alone
    assert (tmp_path / "theirs" / RUN_LOCK).exists()
