"""``evaluate --figure``: a grid of the best and worst test images, drawn from the evaluation itself."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from _inference_fixtures import COD10K_TEST
from engine.evaluation.figure import Extremes, FigureRow, figure_size_px
from train_ultimate import main


def _evaluate(ckpt, cod10k, *extra):
    args = ["evaluate", "--checkpoint", str(ckpt), "--dataset-path", str(cod10k), "--num-workers", "0",
            "--device", "cpu", "--no-progress", *extra]
    return CliRunner().invoke(main, args)


def _row(score: float, name: str) -> FigureRow:
    return FigureRow("set", Path(name), score, np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))


@pytest.mark.parametrize("rows, expected_rows", [(4, 4), (2, 2), (9, len(COD10K_TEST))])
def test_figure_png_has_one_row_per_image_kept(ckpt, cod10k, tmp_path, rows, expected_rows):
    figure = tmp_path / "sub" / "figure.png"
    result = _evaluate(ckpt, cod10k, "--figure", str(figure), "--figure-rows", str(rows))
    assert result.exit_code == 0, result.output
    png = cv2.imread(str(figure))
    assert png is not None and png.shape[:2] == figure_size_px(expected_rows)
    assert figure_size_px(expected_rows)[0] > figure_size_px(expected_rows - 1)[0]  # height counts rows
    assert not [p for p in figure.parent.iterdir() if p != figure]  # no staged file left beside it


def test_extremes_keep_the_best_and_worst_best_first():
    extremes = Extremes(4)
    for i, score in enumerate([0.5, 0.9, 0.1, 0.7, 0.3, 0.8]):
        extremes.add(_row(score, f"img{i}.png"))
    assert [r.score for r in extremes.rows()] == [0.9, 0.8, 0.3, 0.1]
    few = Extremes(5)
    for i, score in enumerate([0.2, 0.6]):
        few.add(_row(score, f"img{i}.png"))
    assert [r.score for r in few.rows()] == [0.6, 0.2]  # fewer images than rows: each once


def test_figure_path_that_is_a_folder_is_a_usage_error(ckpt, cod10k, tmp_path):
    result = _evaluate(ckpt, cod10k, "--figure", str(tmp_path))
    assert result.exit_code == 2 and "--figure" in result.output and str(tmp_path) in result.output


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder this process cannot create files in: read-only bits, or /proc where those do not bind (root)."""
    if os.name != "posix":
        pytest.skip("needs POSIX permissions")
    if os.geteuid() == 0:
        if not Path("/proc/self").is_dir():
            pytest.skip("root without /proc")
        yield Path("/proc")
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    yield locked
    locked.chmod(0o700)


def test_figure_in_a_read_only_folder_is_refused_before_any_work(tmp_path, unwritable_folder):
    target = unwritable_folder / "figure.png"
    # The checkpoint does not exist: the path check comes first, with exit code 2.
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--figure", str(target)])
    assert result.exit_code == 2 and str(target) in result.output
    assert not target.exists()


def test_figure_rows_must_be_positive(ckpt, cod10k, tmp_path):
    result = _evaluate(ckpt, cod10k, "--figure", str(tmp_path / "f.png"), "--figure-rows", "0")
    assert result.exit_code == 2 and "--figure-rows" in result.output
