"""``train_ultimate.py train``: train a CamoXpert (single process or torchrun DDP).

Defaults come from ``configs/default.yaml``; ``--config FILE.yaml``, the flags below and
``--set section.key=value`` override them, in that order. Without ``--dataset-path`` the run
uses the built-in synthetic set (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, Optional, Tuple

import click

from cli.options import InputError

__all__ = ["FLAG_TO_CONFIG", "train"]

# CLI flag (click parameter name) -> dotted config key. A flag left out is None and does not
# override the config.
FLAG_TO_CONFIG: Dict[str, str] = {
    "dataset_path": "data.dataset_paths",
    "checkpoint_dir": "train.checkpoint_dir",
    "backbone": "model.backbone",
    "num_experts": "model.num_experts",
    "top_k": "model.top_k",
    "batch_size": "train.batch_size",
    "accumulation_steps": "train.accumulation_steps",
    "img_size": "data.img_size",
    "epochs": "train.epochs",
    "stage1_epochs": "train.stage1_epochs",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "deep_supervision": "model.deep_supervision",
    "use_ema": "train.use_ema",
    "compile": "train.compile",
    "device": "train.device",
    "num_workers": "data.num_workers",
    "seed": "train.seed",
    "use_flash_attn": "model.use_flash_attn",
    "pretrained": "model.pretrained",
    "pretrained_weights": "model.pretrained_weights",
    "skip_bad_samples": "data.skip_bad_samples",
    "precision": "train.precision",
    "time_budget": "train.time_budget",
}


def _load_defaults() -> Optional[Dict[str, Any]]:
    try:
        from engine.config import load_default_config

        return load_default_config()
    except Exception:  # a broken defaults file is reported when the command runs, not at import
        return None


_DEFAULTS = _load_defaults()


def _default(dotted: str) -> str:
    """``[value]`` of a key of configs/default.yaml for --help, so the YAML stays the one source."""
    node: Any = _DEFAULTS
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, bool):
        return "[on]" if node else "[off]"
    return f"[{node}]"


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _resolve(config_file, flags, set_items, base=None) -> Dict[str, Any]:
    from engine.config import ConfigError, resolve_config

    try:
        return resolve_config(config_file, flags, set_items, base=base)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset-path", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder (COD10K-v3, SINet-V2, CAMO, image/mask pairs...); repeat to combine. "
                   "Default: the built-in synthetic set.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), help="Where runs write " + _default("train.checkpoint_dir") + ".")
@click.option("--backbone", type=str, help="timm EdgeNeXt variant " + _default("model.backbone") + ".")
@click.option("--num-experts", type=int, help="Experts per MoE layer " + _default("model.num_experts") + ".")
@click.option("--top-k", type=int, help="Experts chosen per token (per image with model.routing=image) " + _default("model.top_k") + ".")
@click.option("--batch-size", type=int, help="Images per process and step " + _default("train.batch_size") + ".")
@click.option("--accumulation-steps", type=int, help="Micro-batches per optimizer step " + _default("train.accumulation_steps") + ".")
@click.option("--img-size", type=int, help="Training resolution, a multiple of 32 " + _default("data.img_size") + ".")
@click.option("--epochs", type=int, help="Total epochs " + _default("train.epochs") + ".")
@click.option("--stage1-epochs", type=int, help="Epochs with the backbone frozen " + _default("train.stage1_epochs") + ".")
@click.option("--lr", type=float, help="Peak learning rate " + _default("train.lr") + ".")
@click.option("--weight-decay", type=float, help="AdamW weight decay " + _default("train.weight_decay") + ".")
@click.option("--deep-supervision/--no-deep-supervision", default=None, help="Side-output losses " + _default("model.deep_supervision") + ".")
@click.option("--use-ema/--no-ema", default=None, help="Keep EMA weights, validate and save them " + _default("train.use_ema") + ".")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile the model (its step is still replayed from a CUDA graph) [default: on CUDA devices for runs of 1 h or 50,000 steps and more, off on CPU; a failed compile falls back to eager].")
@click.option("--time-budget", type=str, default=None,
              help="Wall-time budget such as 8h30m, 90m or 240s: the schedule is sized to end, checkpoints written, "
                   "inside it. With --resume: a new budget for this session (without it, the rest of the saved one).")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace an earlier run in --checkpoint-dir (otherwise a folder holding a run is refused).")
@click.option("--device", type=str, help="auto, cpu, cuda, cuda:N " + _default("train.device") + ".")
@click.option("--num-workers", type=click.IntRange(min=0),
              help="DataLoader workers per process [default: one per CPU core on a GPU, up to 8; 2 on the CPU].")
@click.option("--seed", type=int, help="Random seed " + _default("train.seed") + ".")
@click.option("--resume", type=str, default=None,
              help="Checkpoint to continue from, or 'auto' (last.pt in --checkpoint-dir if there is one).")
@click.option("--use-flash-attn/--no-flash-attn", default=None, help="Fused SDPA attention or explicit math " + _default("model.use_flash_attn") + ".")
@click.option("--pretrained/--no-pretrained", default=None, help="ImageNet backbone weights via timm " + _default("model.pretrained") + ".")
@click.option("--pretrained-weights", type=click.Path(exists=True, dir_okay=False),
              help="Local backbone weight file (.safetensors/.pth); implies --pretrained.")
@click.option("--skip-bad-samples", is_flag=True, default=None,
              help="Train without unreadable/unpaired/mismatched samples instead of stopping (exit code 2).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default=None,
              help="Mixed precision [auto: bf16 or fp16 on GPU, fp32 on CPU].")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML merged over configs/default.yaml.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
              help="Dotted override applied last, e.g. --set train.lr=0.001 (repeatable).")
def train(config_file: Optional[str], set_items: Tuple[str, ...], resume: Optional[str], overwrite: bool,
          **flags: Any) -> None:
    """Train CamoXpert; writes last.pt, best.pt, config.yaml, metrics.jsonl and curves.png.

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
    from engine.checkpoint import CheckpointError
    from engine.config import ConfigError
    from engine.training.resume import find_resume_checkpoint, load_resume_checkpoint, resume_output_dir
    from engine.training.trainer import Trainer, TrainingDiverged

    flags["compile"] = flags.pop("compile_")
    flags["dataset_path"] = list(flags["dataset_path"]) or None
    dotted = {FLAG_TO_CONFIG[name]: value for name, value in flags.items()}
    config = _resolve(config_file, dotted, set_items)

    ckpt = None
    try:
        resume_path = find_resume_checkpoint(resume, config["train"]["checkpoint_dir"])
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise click.UsageError(str(exc)) from exc
    if resume == "auto" and resume_path is None and _is_main_process():
        click.echo(f"--resume auto: no last.pt in {config['train']['checkpoint_dir']}; starting a new run.")
    if resume_path is not None:
        try:
            ckpt = load_resume_checkpoint(resume_path)
        except CheckpointError as exc:
            raise InputError(str(exc)) from exc
        except ConfigError as exc:  # not a checkpoint, or best.pt: a usage error, like a missing file
            raise click.UsageError(str(exc)) from exc
        # The checkpoint's settings replace the defaults; the file, flags and --set still win. Where
        # files go is this machine's choice, never the stored config's.
        base = dict(ckpt.get("config") or {})
        base["train"] = {k: v for k, v in dict(base.get("train") or {}).items() if k != "checkpoint_dir"}
        config = _resolve(config_file, dotted, set_items, base=base)
        out_dir = resume_output_dir(resume, resume_path, _given_checkpoint_dir(config_file, flags, set_items),
                                    config["train"]["checkpoint_dir"])
        config["train"]["checkpoint_dir"] = str(out_dir)
        if _is_main_process():
            click.echo(f"Resuming from {resume_path}; writing into {out_dir}.")

    if _is_main_process():
        _check_writable(config["train"]["checkpoint_dir"])
    new_budget = flags.get("time_budget") is not None or any(i.startswith("train.time_budget=") for i in set_items)
    trainer = Trainer(config, resume=ckpt, overwrite=overwrite, new_budget=new_budget, started_at=started,
                      resume_path=resume_path)
    try:
        result = _fit(trainer)
    except TrainingDiverged as exc:
        raise click.ClickException(str(exc)) from exc
    if result.status == "interrupted":
        sys.exit(0)


def _given_checkpoint_dir(config_file: Optional[str], flags: Dict[str, Any], set_items: Tuple[str, ...]) -> Optional[str]:
    """``train.checkpoint_dir`` when this command sets it (config file < flag < --set), else None."""
    from engine.config import load_yaml, parse_set_overrides

    given = None
    if config_file is not None:
        section = load_yaml(config_file).get("train")
        if isinstance(section, dict) and section.get("checkpoint_dir") is not None:
            given = section["checkpoint_dir"]
    if flags.get("checkpoint_dir") is not None:
        given = flags["checkpoint_dir"]
    section = parse_set_overrides(set_items).get("train")
    if isinstance(section, dict) and section.get("checkpoint_dir") is not None:
        given = section["checkpoint_dir"]
    return None if given is None else str(given)


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
