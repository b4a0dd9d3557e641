"""Atomic writes (engine.files) and figures (engine.plotting) that leave global state alone."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.files import atomic_open, atomic_torch_save, atomic_write_bytes, atomic_write_text
from engine.plotting import plot_training_curves

ROOT = Path(__file__).resolve().parents[2]


def test_atomic_writes_replace_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old: 1\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(path, "w") as fh:
            fh.write("half a fi")
            raise RuntimeError("boom")
    assert path.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(path, "a"):
            pass


def test_plots_write_png_without_touching_the_matplotlib_backend(tmp_path):
    # A fresh interpreter: the backend is still unresolved there, and plotting must not pick one.
    code = f"""
import matplotlib, numpy as np
matplotlib.use("svg")
from engine.plotting import plot_test_curves, plot_training_curves
records = [{{"epoch": e, "train_main_loss": 1.0 / e, "val_loss": 1.2 / e, "val_Sm": 0.3 + 0.1 * e,
             "val_MAE": 0.2 / e, "lr": 1e-3 / e}} for e in (1, 2, 3)]
assert plot_training_curves(records, r"{tmp_path}/curves.png") is not None
t = np.linspace(0, 1, 256)
curves = {{"A": {{"precision": t, "recall": 1 - t, "thresholds": t, "fmeasure": t * (1 - t)}}, "B": {{}}}}
assert plot_test_curves(curves, r"{tmp_path}/pr/curves.png") is not None
assert plot_test_curves({{"B": {{}}}}, r"{tmp_path}/none.png") is None
import matplotlib.pyplot as plt
assert matplotlib.get_backend().lower() == "svg", matplotlib.get_backend()
assert plt.get_fignums() == []
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for name in ("curves.png", "pr/curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "none.png").exists()
    assert plot_training_curves([], tmp_path / "empty.png") is None
