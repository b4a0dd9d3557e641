"""``train_ultimate.py train``: train a CamoXpert (single process or torchrun DDP).

Defaults come from :mod:`engine.settings` (``configs/default.yaml`` is generated from it);
``--config FILE.yaml``, the flags below (each built from the field it sets) and
``--set section.key=value`` override them, in that order. Without ``--dataset-path`` the run
uses the built-in synthetic set (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional, Tuple

import click

from cli.config_options import config_flags, config_option
from cli.options import InputError

__all__ = ["train"]


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option("--dataset-path", key="data.dataset_paths", multiple=True,
               type=click.Path(exists=True, file_okay=False))
@config_option("--checkpoint-dir", key="train.checkpoint_dir", type=click.Path(file_okay=False))
@config_option("--backbone", key="model.backbone")
@config_option("--num-experts", key="model.num_experts")
@config_option("--top-k", key="model.top_k")
@config_option("--batch-size", key="train.batch_size")
@config_option("--accumulation-steps", key="train.accumulation_steps")
@config_option("--img-size", key="data.img_size")
@config_option("--epochs", key="train.epochs")
@config_option("--stage1-epochs", key="train.stage1_epochs")
@config_option("--lr", key="train.lr")
@config_option("--weight-decay", key="train.weight_decay")
@config_option("--deep-supervision/--no-deep-supervision", key="model.deep_supervision")
@config_option("--use-ema/--no-ema", key="train.use_ema")
@config_option("--compile/--no-compile", "compile_", key="train.compile")
@config_option("--time-budget", key="train.time_budget")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace an earlier run in --checkpoint-dir (otherwise a folder holding a run is refused).")
@config_option("--device", key="train.device")
@config_option("--num-workers", key="data.num_workers")
@config_option("--seed", key="train.seed")
@click.option("--resume", type=str, default=None,
              help="Checkpoint to continue from, or 'auto' (last.pt in --checkpoint-dir if there is one).")
@config_option("--use-flash-attn/--no-flash-attn", key="model.use_flash_attn")
@config_option("--pretrained/--no-pretrained", key="model.pretrained")
@config_option("--pretrained-weights", key="model.pretrained_weights", type=click.Path(exists=True, dir_okay=False))
@config_option("--skip-bad-samples", key="data.skip_bad_samples")
@config_option("--precision", key="train.precision")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML merged over configs/default.yaml.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
              help="Dotted override applied last, e.g. --set train.lr=0.001 (repeatable).")
def train(config_file: Optional[str], set_items: Tuple[str, ...], resume: Optional[str], overwrite: bool,
          **flags: Any) -> None:
    """Train CamoXpert; writes last.pt, best.pt, config.yaml, metrics.jsonl and curves.png.

    Defaults come from engine.settings (configs/default.yaml is generated from them); --config,
    the flags and --set override them, in that order, and --resume's checkpoint lies under all
    three. The whole configuration is checked before anything is written.

    \b
    Examples:
      python train_ultimate.py train                       # synthetic demo, CPU-friendly
      python train_ultimate.py train --dataset-path data/COD10K-v3 --dataset-path data/CAMO \\
          --config configs/cod10k.yaml --pretrained
      python train_ultimate.py train --resume auto         # continue a stopped run
      python train_ultimate.py train --time-budget 8h30m   # sized to end inside a Kaggle session
      torchrun --nproc_per_node 2 train_ultimate.py train --config configs/cod10k.yaml ...
    """
    import time

    # From the process launch when run as a program (the imports before this line count too).
    started = (click.get_current_context().obj or {}).get("launched_at") or time.perf_counter()
    from engine.config import ConfigError
    from engine.settings import ConfigRequest
    from engine.training.request import RunRequest
    from engine.training.trainer import Trainer, TrainingDiverged

    try:
        request = ConfigRequest.read(config_file, config_flags(click.get_current_context()), set_items)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    settings, ckpt, resume_path = _resolve_with_resume(request, resume)
    if _is_main_process():
        _check_writable(settings.train.checkpoint_dir)
    # A budget given by this command (not by a config file) is a new one for a resumed run.
    new_budget = request.given("train.time_budget", layers=("flags", "sets")) is not None
    run_request = RunRequest(resume=ckpt, resume_path=resume_path, overwrite=overwrite, new_budget=new_budget)
    trainer = Trainer(settings, run_request, started_at=started)
    try:
        result = _fit(trainer)
    except TrainingDiverged as exc:
        raise click.ClickException(str(exc)) from exc
    if result.status == "interrupted":
        sys.exit(0)


def _resolve_with_resume(request, resume: Optional[str]):
    """Find and load the checkpoint ``--resume`` names, then resolve the configuration once, the
    checkpoint's stored config as the layer under the command's own; nothing is written.

    Returns:
        (the typed settings, the loaded checkpoint or None, its path or None).
    """
    from engine.checkpoint import CheckpointError
    from engine.config import ConfigError
    from engine.settings import TrainSettings
    from engine.training.resume import find_resume_checkpoint, load_resume_checkpoint, resume_output_dir

    given_dir = request.given("train.checkpoint_dir")
    folder = str(given_dir if given_dir is not None else TrainSettings.model_fields["checkpoint_dir"].default)
    try:
        resume_path = find_resume_checkpoint(resume, folder)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise click.UsageError(str(exc)) from exc
    if resume == "auto" and resume_path is None and _is_main_process():
        click.echo(f"--resume auto: no last.pt in {folder}; starting a new run.")
    ckpt, stored = None, None
    if resume_path is not None:
        try:
            ckpt = load_resume_checkpoint(resume_path)
        except CheckpointError as exc:
            raise InputError(str(exc)) from exc
        except ConfigError as exc:  # not a checkpoint, or best.pt: a usage error, like a missing file
            raise click.UsageError(str(exc)) from exc
        # Where files go is this machine's choice, never the stored config's.
        stored = dict(ckpt.get("config") or {})
        stored["train"] = {k: v for k, v in dict(stored.get("train") or {}).items() if k != "checkpoint_dir"}
    try:
        settings = request.resolve(stored=stored)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if resume_path is not None:
        out_dir = resume_output_dir(resume, resume_path, None if given_dir is None else str(given_dir),
                                    settings.train.checkpoint_dir)
        settings = settings.with_checkpoint_dir(out_dir)
        if _is_main_process():
            click.echo(f"Resuming from {resume_path}; writing into {out_dir}.")
    return settings, ckpt, resume_path


def _check_writable(folder: str) -> None:
    """Refuse (exit code 2) a checkpoint folder this process cannot create or write into.

    Checked by writing a temporary file, before anything else is written: permission bits,
    read-only mounts and ACLs all show, and the run fails in a second instead of with a
    traceback from the first config.yaml write.
    """
    import tempfile
    from pathlib import Path

    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except (FileExistsError, NotADirectoryError):
        return  # a file in the way: prepare_run_folder says so, more precisely
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise click.UsageError(
            f"Cannot write into the checkpoint folder {path} ({reason}). Pass a --checkpoint-dir you can write "
            f"to (e.g. --checkpoint-dir runs/exp1), or fix the folder's permissions or mount."
        ) from exc


def _fit(trainer):
    """Run the trainer, turning user-facing errors into messages and exit codes."""
    from datasets import DatasetLayoutError, DatasetValidationError
    from engine.checkpoint import CheckpointError
    from engine.config import ConfigError
    from engine.files import FileWriteError
    from engine.training.data import DataError
    from models import PretrainedWeightsError

    try:
        return trainer.fit()
    except DatasetValidationError as exc:
        if _is_main_process():
            fix = ("fix the files above or pass --skip-bad-samples" if exc.report.n_usable
                   else "no usable sample is left; fix or replace the files above")
            text = f"{exc}\nTraining not started: {fix}."
            click.echo(text, err=True)
            trainer.reporter.append_log(text)  # the full list in train.log too (no-op before it exists)
        sys.exit(2)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except (DataError, DatasetLayoutError, CheckpointError, PretrainedWeightsError) as exc:
        raise InputError(str(exc)) from exc
    except FileWriteError as exc:  # full or read-only disk mid-run (DiskFullError included)
        raise click.ClickException(f"{exc} Training stopped.") from exc
    except KeyboardInterrupt:
        # A second Ctrl-C: checkpoint saves finish before it acts, so last.pt is whole.
        last = trainer.out_dir / "last.pt"
        if _is_main_process() and last.is_file():
            click.echo(f"\nInterrupted. {last} holds the last completed save; continue with --resume auto "
                       f"--checkpoint-dir {trainer.out_dir}.", err=True)
        sys.exit(130)
