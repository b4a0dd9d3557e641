"""What a run leaves to look at: the loss at every logged step, plain TensorBoard names, example images."""
import json

import pytest

from _train_helpers import TINY_ARGS, make_dataset, run_cli
from engine.plotting import plot_training_curves


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    data = make_dataset(root / "data", n_train=8, n_test=2)
    out = root / "run"
    result = run_cli(["train", "--dataset-path", str(data), "--checkpoint-dir", str(out), *TINY_ARGS,
                      "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    return out


def test_every_logged_step_is_recorded_for_the_curves(run_folder):
    steps = [json.loads(line) for line in (run_folder / "train_steps.jsonl").read_text().splitlines()]
    validations = [json.loads(line) for line in (run_folder / "metrics.jsonl").read_text().splitlines()
                   if "summary" not in json.loads(line)]
    assert [r["step"] for r in steps] == list(range(1, 7))  # log_every_steps=1: 3 steps x 2 epochs
    assert all(r["main_loss"] > 0 and r["lr"] > 0 for r in steps)
    assert len(validations) == 2 and (run_folder / "curves.png").stat().st_size > 0


def test_tensorboard_has_plain_names_and_validation_images(run_folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_folder / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    assert {"val/S", "val/MAE", "val/loss", "train/main_loss", "train/lr"} <= scalars
    assert not any(tag.startswith("val/val_") for tag in scalars)
    assert {"val/images", "val/ground_truth", "val/predictions"} <= images
    assert len(events.Images("val/predictions")) == 2  # one per validation


def test_a_short_run_draws_a_line_not_a_dot(tmp_path, monkeypatch):
    import engine.plotting as plotting

    drawn = {}
    real_save = plotting.save_png
    monkeypatch.setattr(plotting, "save_png", lambda fig, path, dpi: drawn.setdefault("fig", fig) and real_save(fig, path, dpi))
    steps = [{"step": s, "main_loss": 1.0 / s, "lr": 1e-3} for s in range(1, 9)]
    records = [{"step": 8, "epoch": 1, "val_loss": 0.3, "val_Sm": 0.5, "val_MAE": 0.2, "lr": 1e-3}]
    assert plot_training_curves(records, tmp_path / "curves.png", steps=steps).stat().st_size > 0
    loss_axis = drawn["fig"].axes[0]
    assert len(loss_axis.lines[0].get_xdata()) == 8  # one point per logged step, one validation beside it
    assert plot_training_curves([], tmp_path / "none.png", steps=[]) is None


def test_the_run_folder_holds_its_best_and_worst_validation_images(run_folder):
    import cv2

    from engine.evaluation.figure import figure_size_px

    figure = cv2.imread(str(run_folder / "predictions.png"))
    assert figure is not None and figure.shape[:2] == figure_size_px(2)  # both held-out images, one row each


def test_a_run_without_image_files_draws_no_figure(tmp_path):
    import torch

    from engine.evaluation.run_figure import write_run_figure

    (tmp_path / "best.pt").write_bytes(b"")  # never opened: there are no files to show
    assert write_run_figure(tmp_path, None, torch.device("cpu")) is None
    assert not (tmp_path / "predictions.png").exists()
