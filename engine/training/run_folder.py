"""The run folder: claimed with a lock, checked for another run, cleared of a failed start's files.

* **The lock.** A ``train`` process holds an OS file lock (``flock``) on ``.train.lock`` from before
  it writes anything until it ends. Taking it is one atomic step, so of two starts at the same
  instant exactly one gets it; the kernel drops it when its process dies, however it dies, so a
  lock file left by a killed run (or naming a pid that now belongs to another program) never
  blocks the folder. The file also records who holds it (host, pid, process start time), for the
  message the next start prints.
* **Another run.** A folder holding a checkpoint (``last.pt``, ``best.pt``) holds a run: a new
  start is refused unless told to replace it (``overwrite``) or to continue it (resume).
* **A failed start.** A start writes ``.train.start`` before any run file, so the files of a start
  that failed before its first checkpoint (``config.yaml``, logs) are recognised as its own and
  removed by the next start. Run-file names without that marker are the user's: refused, listed.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from engine.config import ConfigError
from engine.files import PathLike, atomic_write_text, write_error

__all__ = [
    "RUN_FILES",
    "RUN_LOCK",
    "START_MARKER",
    "RunFolderError",
    "claim_run_folder",
    "prepare_run_folder",
    "release_run_folder",
]

# Files and folders a run writes into its checkpoint folder (removed by ``overwrite``).
RUN_FILES = ("last.pt", "best.pt", "pretrained", "config.yaml", "metrics.jsonl", "train_steps.jsonl", "curves.png",
             "predictions.png", "train.log", "run_summary.json", "tensorboard")
# Their presence means the folder holds a run: only saved state counts.
_RUN_MARKERS = ("last.pt", "best.pt")
RUN_LOCK = ".train.lock"
START_MARKER = ".train.start"
# engine.files' temporary files: mkstemp(prefix=".{name}.", suffix=".tmp"), ".{name}.{random}.tmp".
_TEMP_FILE = re.compile(r"\..+\.[A-Za-z0-9_]+\.tmp")

# Folder (resolved) -> descriptor of the lock this process holds on it.
_HELD: Dict[str, int] = {}


class RunFolderError(ConfigError):
    """The checkpoint folder is in use, holds another run, or holds files this project did not write."""


def _process_start(pid: int) -> Optional[int]:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5); the split dropped the first two
    except (OSError, IndexError, ValueError):
        return None


def _holder_text(lock: Path) -> str:
    """Who holds ``lock``, from what it wrote into the file right after taking it."""
    for _ in range(20):  # a holder that has just taken the lock writes its name a moment later
        try:
            info = json.loads(lock.read_text())
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
            return f"pid {int(info['pid'])} on {info['host']}, running since {started}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "a process that has not written its name"


def claim_run_folder(out_dir: PathLike) -> None:
    """Take ``out_dir``'s run lock for this process (creating the folder); a no-op if already held.

    Raises:
        RunFolderError: another live process holds it; the message names it and how to clear a
            lock by hand where the OS lock cannot be seen (a network disk shared between machines).
        FileWriteError: the folder or the lock file cannot be created.
    """
    out = Path(out_dir)
    key = os.path.realpath(out)
    if key in _HELD:
        return
    lock = out / RUN_LOCK
    try:
        out.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderError(
                    f"{out} is in use by another train process ({_holder_text(lock)}; {lock}). Wait for it to end "
                    f"or stop it (it saves last.pt on SIGTERM), or choose another --checkpoint-dir. The lock goes "
                    f"away with its process, even a killed one; only if no such process runs (a folder on a network "
                    f"disk shared between machines) delete {lock} by hand.") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder released (unlinked) it between our open and flock: take the new one
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                "process_start": _process_start(os.getpid())}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
    except OSError as exc:
        raise write_error(lock, exc) from exc
    _HELD[key] = fd


def release_run_folder(out_dir: PathLike) -> None:
    """Give up ``out_dir``'s run lock if this process holds it (at the end of a run, however it ends).

    The file is removed while still locked, so a start waiting for it never locks a removed file.
    """
    fd = _HELD.pop(os.path.realpath(Path(out_dir)), None)
    if fd is None:
        return
    try:
        (Path(out_dir) / RUN_LOCK).unlink()
    except OSError:
        pass
    os.close(fd)


def _check_folder_path(out: Path) -> None:
    """Refuse a folder path that is a file or lies below one (``mkdir`` would fail mid-run)."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == out else f"lies below {path}, which is a file"
                raise RunFolderError(
                    f"--checkpoint-dir {out} {what}, not a folder: pass a folder path (e.g. --checkpoint-dir runs/exp1)."
                )
            return


def _refuse_another_run(out: Path, found: List[str], foreign: bool, resumed_from: Optional[PathLike]) -> None:
    if foreign:
        raise RunFolderError(
            f"{out} already holds another run ({', '.join(found)}), and --resume {resumed_from} comes from "
            f"another folder. Leave out --checkpoint-dir to continue next to {resumed_from}, pass --overwrite "
            f"to replace the run in {out}, or choose an empty --checkpoint-dir."
        )
    raise RunFolderError(
        f"{out} already holds a run ({', '.join(found)}). Use --resume auto to continue it, --overwrite to "
        f"replace it, or another --checkpoint-dir."
    )


def prepare_run_folder(out_dir: PathLike, resuming: bool, overwrite: bool, is_main: bool = True,
                       log: Callable[[str], None] = print, resumed_from: Optional[PathLike] = None) -> None:
    """Make ``out_dir`` ready for a run: lock it first (rank 0), then check and clear it.

    Args:
        out_dir: the checkpoint folder.
        resuming: this run continues the folder's run (or another checkpoint).
        overwrite: delete an earlier run's files first.
        is_main: rank 0 (the only one that locks, deletes and writes).
        log: where to say what was removed.
        resumed_from: the checkpoint file a resumed run continues; a folder holding another
            run (not the one this file belongs to) is refused like a new run's.

    Raises:
        RunFolderError: the path is (below) a file; another process holds the folder; a new run,
            or a run resumed from another folder, into a folder holding a run or files this
            project did not write, without ``overwrite``.
    """
    out = Path(out_dir)
    _check_folder_path(out)
    if not is_main:
        _check_folder(out, resuming, overwrite, False, log, resumed_from)
        return
    claim_run_folder(out)  # before anything is checked, removed or written
    try:
        _check_folder(out, resuming, overwrite, True, log, resumed_from)
    except BaseException:
        release_run_folder(out)  # refused: the folder stays free for the next start
        raise


def _check_folder(out: Path, resuming: bool, overwrite: bool, is_main: bool, log: Callable[[str], None],
                  resumed_from: Optional[PathLike]) -> None:
    found = [name for name in _RUN_MARKERS if (out / name).exists()]
    foreign = resuming and resumed_from is not None and Path(resumed_from).resolve().parent != out.resolve()
    new_run = not resuming or foreign
    if found and new_run and not overwrite:
        _refuse_another_run(out, found, foreign, resumed_from)
    if not is_main:
        return
    if new_run:
        _clear_for_new_run(out, bool(found), overwrite, log)
    for tmp in out.glob(".*.tmp"):  # killed writes' temporary files; the lock says none is in progress
        if _TEMP_FILE.fullmatch(tmp.name) and tmp.is_file():
            tmp.unlink(missing_ok=True)
    atomic_write_text(out / START_MARKER, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                      "started": time.time()}) + "\n")


def _clear_for_new_run(out: Path, holds_run: bool, overwrite: bool, log: Callable[[str], None]) -> None:
    """Remove an earlier run's files (``overwrite``) or a failed start's; refuse anyone else's."""
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present:
        return
    if holds_run or overwrite:  # holds_run implies overwrite here: the caller refused otherwise
        _remove(out, present)
        log(f"--overwrite: removed the earlier run's files from {out}.")
        return
    if not (out / START_MARKER).is_file():
        raise RunFolderError(
            f"{out} holds {', '.join(present)}, which no earlier train start wrote there (no {START_MARKER}). "
            f"Choose another --checkpoint-dir, or pass --overwrite to delete them."
        )
    # A start that stopped before saving anything (failed checks, killed early): its logs would
    # otherwise be mixed into this run's (train.log, TensorBoard events).
    _remove(out, present)
    log(f"Removed {', '.join(present)} from {out}: left by an earlier start that saved no checkpoint.")


def _remove(out: Path, names: List[str]) -> None:
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
