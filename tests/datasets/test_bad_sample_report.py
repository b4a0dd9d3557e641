"""The bad-sample report names every file (stderr and train.log), and never suggests
--skip-bad-samples when skipping would leave nothing to train on."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from _datasets_helpers import write_image, write_pairs
from _train_helpers import TINY_ARGS, run_cli
from datasets import check_splits, discover_dataset

N_BAD = 25  # more than the 20 per kind the report used to cut at


def _dataset(root: Path, n_good: int, n_bad: int) -> Path:
    """A pairs folder: ``n_good`` image/mask pairs and ``n_bad`` images without a mask."""
    write_pairs(root / "Image", root / "GT", [f"good{i:02d}" for i in range(n_good)])
    (root / "GT").mkdir(parents=True, exist_ok=True)
    for i in range(n_bad):
        write_image(root / "Image" / f"nomask{i:02d}.jpg", seed=i)
    return root


def _bad_names(n: int = N_BAD):
    return [f"nomask{i:02d}.jpg" for i in range(n)]


def test_report_lists_every_bad_sample(tmp_path):
    report = check_splits(discover_dataset(_dataset(tmp_path / "set", 2, N_BAD)), skip_bad_samples=True)[1]
    text = report.format()
    assert all(name in text for name in _bad_names()) and "... and" not in text
    assert report.n_usable == 2 and "--skip-bad-samples" in text
    assert re.search(r"(\d+) usable samples", text).group(1) == "2"  # the count the option would train on
    assert "... and 5 more" in report.format(max_per_kind=20)  # a short form stays available


def test_report_without_usable_samples_does_not_suggest_skipping(tmp_path):
    with pytest.raises(Exception) as info:
        check_splits(discover_dataset(_dataset(tmp_path / "set", 0, 3)), skip_bad_samples=True)
    text = str(info.value)
    assert "No usable samples" in text and "0 usable" not in text and "pass --skip-bad-samples" not in text
    assert info.value.report.n_usable == 0


def _train(data: Path, out: Path, *extra):
    return run_cli(["train", "--dataset-path", str(data), "--checkpoint-dir", str(out), *TINY_ARGS, *extra])


def test_train_prints_and_logs_the_full_list(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    result = _train(_dataset(tmp_path / "set", 4, N_BAD), tmp_path / "run")
    assert result.exit_code == 2, result.output
    log = (tmp_path / "run" / "train.log").read_text()
    for name in _bad_names():
        assert name in result.stderr and name in log, name
    assert "... and" not in result.stderr and "pass --skip-bad-samples" in result.stderr


def test_skip_bad_samples_with_nothing_usable_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    result = _train(_dataset(tmp_path / "set", 0, 3), tmp_path / "run", "--skip-bad-samples")
    assert result.exit_code == 2, result.output
    assert "no usable sample" in result.stderr.lower()
    assert "0 usable" not in result.stderr and "pass --skip-bad-samples" not in result.stderr
    assert "Traceback" not in result.output
