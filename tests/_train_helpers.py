"""Shared pieces of the training tests: tiny synthetic data sets and running the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from click.testing import CliRunner
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]

# Small and fast: 64 px, batch 4, no worker processes (bit-exact runs on CPU).
TINY_ARGS: List[str] = [
    "--backbone", "edgenext_xx_small",
    "--img-size", "64",
    "--batch-size", "4",
    "--epochs", "2",
    "--stage1-epochs", "1",
    "--num-workers", "0",
    "--device", "cpu",
    "--set", "data.val_fraction=0.25",
    "--set", "eval.batch_size=4",
    "--set", "train.warmup_steps=2",
    "--set", "train.log_every_steps=1",
    "--set", "train.val_every_seconds=0",
    "--set", "train.adapt_to_budget=false",  # keep stage 1 and the full augmentation (tested on their own)  # validate every epoch (tiny epochs would otherwise skip)
]


def make_dataset(root: Path, n_train: int = 12, n_test: int = 2, img_size: int = 64, seed: int = 0) -> Path:
    """A COD10K-v3-layout synthetic set at ``root`` (written once per path)."""
    from datasets import write_synthetic_dataset

    if not (root / "Train").is_dir():
        write_synthetic_dataset(root, n_train=n_train, n_test=n_test, img_size=img_size, seed=seed, progress=False)
    return root


def run_cli(args: Sequence[str]):
    """Invoke ``train_ultimate.py`` in this process; returns click's Result."""
    from train_ultimate import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def subprocess_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for child processes: repo importable, one thread, no progress bars."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TQDM_DISABLE"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    if extra:
        env.update(extra)
    return env


def train_cmd(args: Sequence[str]) -> List[str]:
    """``python train_ultimate.py train ARGS``."""
    return [sys.executable, str(REPO / "train_ultimate.py"), "train", *args]


def run_subprocess(cmd: Sequence[str], timeout: float = 240, env=None) -> subprocess.CompletedProcess:
    """Run a command, capturing text output."""
    return subprocess.run(list(cmd), cwd=REPO, env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def load_ckpt(path: Path) -> dict:
    """Exactly how evaluate/predict load: ``torch.load(weights_only=True)``."""
    return torch.load(path, map_location="cpu", weights_only=True)


class RecordOps(TorchDispatchMode):
    """Names of the aten operations run inside the block (``_local_scalar_dense`` is a host read)."""

    def __init__(self):
        super().__init__()
        self.ops: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def sigterm_after_step(monkeypatch, step: int) -> None:
    """Deliver a real SIGTERM to this process right after optimizer step ``step`` of the trainer."""
    import signal

    import engine.training.step as step_module
    import engine.training.trainer as trainer_module

    original = step_module.train_step

    def train_step(run, batches):
        original(run, batches)
        if run.step == step:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer_module, "train_step", train_step)
