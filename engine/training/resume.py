"""Saving a run, resuming it, and the checks that keep runs apart.

The one place for:

* ``last.pt`` (everything to continue exactly: weights, EMA, optimizer, schedule, scaler, RNG
  states, position, budget) and ``best.pt`` (only what inference needs: the validated weights,
  the model and run config, the record that made it best);
* the order of writes: best.pt, then the metrics record, then last.pt, each atomic, so a kill
  between two writes loses nothing a resumed run relies on;
* resuming: finding the checkpoint, refusing a model that does not match it, restoring state;
* the run folder itself (its lock, another run in it, a failed start's files) is
  :mod:`engine.training.run_folder`'s.

Both ``train_ultimate.py train`` and Python callers of :class:`~engine.training.trainer.Trainer`
go through these functions, so the same checks run for both.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from engine.checkpoint import CheckpointError, check_checkpoint_file, load_checkpoint, load_weights, save_checkpoint, strip_state_dict_prefixes
from engine.config import ConfigError
from engine.distributed import all_gather_objects
from engine.training.rng import capture_rng_state, restore_rng_state
from engine.training.state import RunState

__all__ = [
    "ResumeError",
    "check_model_matches",
    "find_resume_checkpoint",
    "load_resume_checkpoint",
    "resume_output_dir",
    "restore_run",
    "save_best",
    "save_last",
]

PathLike = Union[str, os.PathLike]

# Model fields that can change between a checkpoint and the resumed run without touching weights.
RESUME_FREE_MODEL_KEYS = {"use_flash_attn", "pretrained", "pretrained_weights"}


class ResumeError(ConfigError):
    """The checkpoint cannot continue this run (different model, inference-only file)."""


def find_resume_checkpoint(resume: Optional[str], checkpoint_dir: PathLike) -> Optional[Path]:
    """Resolve ``--resume``: a path, ``auto`` (``last.pt`` of the checkpoint dir if present), or None.

    Raises:
        FileNotFoundError: an explicit path that does not exist.
        IsADirectoryError: an explicit path that is a folder.
    """
    if not resume:
        return None
    if resume == "auto":
        last = Path(checkpoint_dir) / "last.pt"
        return last if last.is_file() else None
    path = Path(resume).expanduser()
    if path.is_dir():
        raise IsADirectoryError(
            f"--resume {resume} is a folder, not a checkpoint file. Continue the run in it with --resume auto "
            f"--checkpoint-dir {resume}, or pass its file: --resume {path / 'last.pt'}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint file.")
    return path


def resume_output_dir(resume: str, resume_path: PathLike, given_dir: Optional[PathLike],
                      default_dir: PathLike) -> Path:
    """Where a resumed run writes: decided on this machine, never by the checkpoint's stored config.

    Args:
        resume: the ``--resume`` value (``auto`` or a path).
        resume_path: the checkpoint found for it.
        given_dir: ``train.checkpoint_dir`` when this command set it (flag, ``--set`` or config file).
        default_dir: the default ``train.checkpoint_dir``.

    Returns:
        ``given_dir`` when set; else the folder ``--resume auto`` looked in; else the folder of
        the resumed file (its run continues next to it).
    """
    if given_dir is not None:
        return Path(given_dir)
    if resume == "auto":
        return Path(default_dir)
    return Path(resume_path).parent


def _check_is_checkpoint_file(path: PathLike) -> None:
    """Refuse a ``--resume`` file that is no checkpoint at all (text, image...): a usage error.

    Raises:
        ResumeError: with the resume advice (only last.pt resumes: best.pt holds no optimizer state).
    """
    try:
        check_checkpoint_file(Path(path), advice="Resume from the last.pt a `train` run wrote (--resume auto "
                                                  "--checkpoint-dir DIR continues the run in DIR).")
    except CheckpointError as exc:
        raise ResumeError(f"--resume {exc}") from exc


def load_resume_checkpoint(resume: Union[PathLike, Mapping[str, Any]]) -> Dict[str, Any]:
    """Load a checkpoint to continue from (weights-only load; see :func:`engine.checkpoint.load_checkpoint`).

    Raises:
        CheckpointError: unreadable, damaged or unsafe checkpoint.
        ResumeError: a file that is no checkpoint; an inference-only file (best.pt), which holds no
            optimizer state.
    """
    if isinstance(resume, Mapping):
        ckpt = dict(resume)
    else:
        _check_is_checkpoint_file(resume)
        ckpt = load_checkpoint(resume)  # a damaged checkpoint stays a CheckpointError, as in evaluate
    if ckpt.get("kind") == "inference" or "optimizer" not in ckpt:
        where = resume if not isinstance(resume, Mapping) else "the checkpoint"
        raise ResumeError(
            f"--resume {where}: this file holds inference weights only (best.pt), not the optimizer and "
            f"schedule a run continues from. Resume from last.pt in the same folder (--resume auto)."
        )
    return ckpt


def check_model_matches(config: Mapping[str, Any], ckpt: Mapping[str, Any], path: Any = "the checkpoint") -> None:
    """Refuse to resume when the configured model differs from the checkpoint's.

    Raises:
        ResumeError: listing every differing ``model.*`` value and the fix.
    """
    saved = ckpt.get("model_config") or {}
    diffs = [
        f"model.{k}: checkpoint {saved[k]!r}, now {config['model'].get(k)!r}"
        for k in sorted(saved)
        if k not in RESUME_FREE_MODEL_KEYS and k in config["model"] and config["model"][k] != saved[k]
    ]
    if diffs:
        raise ResumeError(
            f"--resume {path}: the model settings differ from the checkpoint's, so its weights cannot be "
            "loaded:\n  " + "\n  ".join(diffs) + "\nDrop these overrides, or start a new run in another "
            "--checkpoint-dir."
        )


def _rng_states() -> list:
    # Collective: every rank calls it at the same point.
    return all_gather_objects(capture_rng_state())


def save_last(run: RunState, out_dir: PathLike, config: Mapping[str, Any], is_main: bool) -> None:
    """Write last.pt: the full state (collective: every rank calls it)."""
    rng = _rng_states()
    if not is_main:
        return
    state = {
        "kind": "training",
        "model_config": run.model.config.to_dict(),
        "model": strip_state_dict_prefixes(run.model.state_dict()),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "ema_updates": run.ema.num_updates if run.ema is not None else 0,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "epoch": int(run.epoch),
        "step": int(run.step),
        "batch_in_epoch": int(run.batch_in_epoch),
        "batch_size": run.batch_size,
        "accumulation_steps": run.accumulation,
        "world_size": run.runtime.ctx.world_size,
        "rng": rng,
        "config": dict(config),
        "metrics": dict(run.history[-1]) if run.history else {},
        "best_Sm": float(run.best_sm),
        "nonfinite_steps": int(run.nonfinite_steps),
        "meters": run.meters.state_dict(),
        "light_augment": bool(run.light_augment),
        "budget": {**run.budget.state_dict(), "planned": bool(run.planned)},
    }
    save_checkpoint(state, Path(out_dir) / "last.pt")


def save_best(run: RunState, out_dir: PathLike, config: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """Write best.pt (rank 0): the validated weights (EMA when used), configs and the record."""
    state = {
        "kind": "inference",
        "model_config": run.model.config.to_dict(),
        "model": strip_state_dict_prefixes(run.eval_model().state_dict()),
        "ema": None,
        "weights": "ema" if run.ema is not None else "model",
        "epoch": record.get("epoch"),
        "step": int(run.step),
        "config": dict(config),
        "metrics": dict(record),
        "best_Sm": float(record["val_Sm"]),
    }
    save_checkpoint(state, Path(out_dir) / "best.pt")


def _best_on_disk(out_dir: Path) -> float:
    """The S-measure best.pt in ``out_dir`` was saved for (-inf without a readable best.pt)."""
    path = out_dir / "best.pt"
    if not path.is_file():
        return -math.inf
    try:
        return float(load_checkpoint(path).get("best_Sm", -math.inf))
    except CheckpointError:
        return -math.inf


def _convert_position(run: RunState, ckpt: Mapping[str, Any], batch: int, changes: list) -> int:
    """Map the saved position to this run's batches and shift the schedule to keep its epochs.

    Every world size walks the same permutation of an epoch (seed + epoch), rank ``r`` taking
    every ``world_size``-th index from ``r``, so ``b`` batches of ``n`` processes at batch size
    ``s`` consumed exactly the first ``b * s * n`` images of it. The resumed run starts at the
    last whole batch (of all its processes, at an accumulation boundary) inside that prefix, so
    at most one global batch is seen twice. Optimizer steps keep counting; the schedule, sized
    in this run's steps per epoch, is shifted so that it ends (and stage 2 starts) at the same
    epoch as before. Returns the batch to start at.
    """
    images = batch * int(ckpt.get("batch_size", run.batch_size)) * int(ckpt.get("world_size", run.runtime.ctx.world_size))
    per_batch = run.batch_size * run.runtime.ctx.world_size
    new = min(images // per_batch, run.batches_per_epoch)
    new -= new % run.accumulation if new < run.batches_per_epoch else 0
    if batch:
        seen_twice = images - new * per_batch
        changes.append(f"the interrupted epoch continues at batch {new} of {run.batches_per_epoch} "
                       f"({images} images done" + (f", {seen_twice} of them seen again)" if seen_twice else ")"))
    schedule = run.schedule
    if run.budget.enabled:  # the budget's schedule was sized in the old steps: size it again
        run.planned = False
        changes.append("the time budget's schedule is sized again after the first steps")
        return new
    epoch = run.epoch + (1 if new >= run.batches_per_epoch else 0)
    done = epoch * run.steps_per_epoch + math.ceil((new % run.batches_per_epoch) / run.accumulation)
    offset = run.step - done
    if offset:
        stage1 = schedule.stage1_steps
        if stage1 > 0:  # stage 1 ends at the same epoch; at least one step so the run keeps two stages
            stage1 = max(1, stage1 + offset)
        # step_count is the checkpoint's (load_state_dict), so resize re-applies the rates at run.step
        schedule.resize(schedule.total_steps + offset, stage1, schedule.warmup_steps)
        changes.append(f"schedule {schedule.total_steps} steps (step {run.step} = step {done} of this "
                       f"process count)")
    return new


def _restore_position(run: RunState, ckpt: Mapping[str, Any]) -> Tuple[int, List[str]]:
    """Set the epoch, batch, meters and random streams from ``ckpt``; returns the batch to continue
    from and what differs from the checkpoint's run (for the log)."""
    rt = run.runtime
    changes = []
    for key, now in (("world_size", rt.ctx.world_size), ("batch_size", run.batch_size),
                     ("accumulation_steps", run.accumulation)):
        before = ckpt.get(key, now)
        if before != now:
            changes.append(f"{key.replace('_', ' ')} {before} -> {now}")
    batch = int(ckpt.get("batch_in_epoch", 0))
    if changes:
        batch = _convert_position(run, ckpt, batch, changes)
    if batch >= run.batches_per_epoch:
        run.epoch, batch = run.epoch + 1, 0
    run.batch_in_epoch = batch
    if batch and ckpt.get("meters") is not None and not changes:
        run.meters.load_state_dict(ckpt["meters"])
    rng = ckpt.get("rng")
    if isinstance(rng, list) and len(rng) == rt.ctx.world_size:
        restore_rng_state(rng[rt.ctx.rank])
    elif isinstance(rng, list) and rt.ctx.rank < len(rng):
        restore_rng_state(rng[rt.ctx.rank])  # this rank's stream continues; ranks the checkpoint lacks keep their seed
        if len(rng) < rt.ctx.world_size:
            changes.append(f"random streams of ranks {len(rng)}+ seeded afresh")
    else:
        changes.append("random streams re-seeded")
    return batch, changes


def restore_run(run: RunState, ckpt: Mapping[str, Any], out_dir: PathLike,
                log: Callable[[str], None]) -> Tuple[int, int]:
    """Load a last.pt into ``run``.

    The best score comes from the best.pt that exists in ``out_dir`` (not from last.pt), so a
    kill between the two writes never leaves a score without its weights. Returns the
    ``(epoch, batch)`` to continue from: the saved position when batch size, accumulation and
    world size are unchanged, else the same number of images into the interrupted epoch, rounded
    down to a whole batch (see :func:`_convert_position`); the log says what changed.

    Raises:
        CheckpointError: weights or optimizer state that do not fit the model.
    """
    load_weights(run.model, ckpt["model"], "the resumed checkpoint")
    try:
        if run.ema is not None:
            if ckpt.get("ema") is not None:
                run.ema.load_state_dict(strip_state_dict_prefixes(ckpt["ema"]), ckpt.get("ema_updates", 0))
            else:  # EMA switched on at resume: start it from the current weights
                run.ema.load_state_dict(run.model.state_dict(), 0)
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"The EMA or optimizer state in the resumed checkpoint does not fit the model ({str(exc)[:300]}). "
            f"The file was edited or mixes two runs; resume from another last.pt or start a new run."
        ) from exc
    if ckpt.get("scheduler") is not None:
        run.schedule.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(ckpt["scaler"])
    run.step = int(ckpt.get("step", 0))
    run.epoch = int(ckpt.get("epoch", 0))
    run.nonfinite_steps = int(ckpt.get("nonfinite_steps", 0))
    run.best_sm = _best_on_disk(Path(out_dir))
    run.light_augment = bool(ckpt.get("light_augment", False))
    batch, changes = _restore_position(run, ckpt)
    if changes:
        log("Note: resumed with " + "; ".join(changes) + ".")
    where = f"epoch {run.epoch + 1}" + (f", batch {batch}" if batch else "")
    best = f"{run.best_sm:.4f}" if math.isfinite(run.best_sm) else "none yet"
    log(f"Resumed at {where} (step {run.step}, best S-measure {best}).")
    return run.epoch, batch
