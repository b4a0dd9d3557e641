"""Data checks before training: exit code 2 listing every bad sample, or --skip-bad-samples."""
import re
import shutil

import cv2
import numpy as np
import pytest
import torch

from _train_helpers import TINY_ARGS, make_dataset, run_cli, run_subprocess, train_cmd


@pytest.fixture(scope="module")
def broken_data(tmp_path_factory):
    """8 good training scenes plus a truncated JPEG, an image without a mask and a size mismatch."""
    root = make_dataset(tmp_path_factory.mktemp("data") / "broken", n_train=8, n_test=2)
    image_dir, mask_dir = root / "Train" / "Image", root / "Train" / "GT_Object"
    images = sorted(image_dir.glob("*.jpg"))
    rng = np.random.default_rng(0)

    truncated = image_dir / "COD10K-CAM-9-Broken-1-Truncated-00001.jpg"
    shutil.copy(images[0], truncated)
    shutil.copy(mask_dir / f"{images[0].stem}.png", mask_dir / f"{truncated.stem}.png")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])

    no_mask = image_dir / "COD10K-CAM-9-Broken-2-NoMask-00002.jpg"
    shutil.copy(images[1], no_mask)

    mismatch = image_dir / "COD10K-CAM-9-Broken-3-Mismatch-00003.jpg"
    cv2.imwrite(str(mismatch), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(mask_dir / f"{mismatch.stem}.png"), np.zeros((48, 64), np.uint8))
    return root, [truncated.name, no_mask.name, mismatch.name]


def test_bad_samples_stop_before_training_with_exit_code_2(broken_data, tmp_path):
    root, bad_names = broken_data
    out = tmp_path / "run"
    result = run_subprocess(train_cmd(["--dataset-path", str(root), "--checkpoint-dir", str(out), *TINY_ARGS]))
    assert result.returncode == 2, result.stdout + result.stderr
    for name in bad_names:
        assert name in result.stderr, f"{name} not reported:\n{result.stderr}"
    assert "--skip-bad-samples" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "last.pt").exists()  # not a single training step
    assert "Epoch 1" not in result.stdout


def test_skip_bad_samples_trains_without_them(broken_data, tmp_path):
    root, bad_names = broken_data
    out = tmp_path / "run"
    result = run_cli(["train", "--dataset-path", str(root), "--checkpoint-dir", str(out), *TINY_ARGS,
                      "--epochs", "1", "--stage1-epochs", "0", "--skip-bad-samples"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("--skip-bad-samples"))
    assert re.findall(r"\d+", line) == ["3", "8"]  # the samples left out, and those kept
    assert (out / "last.pt").is_file()


def test_missing_dataset_path_is_a_usage_error(tmp_path):
    result = run_cli(["train", "--dataset-path", str(tmp_path / "nope"), "--checkpoint-dir", str(tmp_path)])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_make_synthetic_command(tmp_path):
    out = tmp_path / "syn"
    result = run_cli(["make-synthetic", str(out), "--train", "4", "--test", "2", "--img-size", "64", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "Train" / "Image").iterdir())) == 4
    assert len(list((out / "Test" / "GT_Object").iterdir())) == 2
    image = cv2.imread(str(next((out / "Train" / "Image").iterdir())))
    assert image.shape[:2] == (64, 64)


def test_training_images_travel_as_uint8_and_are_normalised_on_the_device():
    import numpy as np

    from datasets import build_eval_transform, build_train_transform
    from engine.training.step import device_batch

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    out = build_train_transform(32, {"hflip_p": 0.0}, normalize=False)(image=pixels[0], mask=np.zeros((32, 32), np.float32))
    assert out["image"].dtype == np.uint8 and out["image"].shape == (32, 32, 3)
    batch = {"image": torch.from_numpy(pixels), "mask": torch.zeros(2, 1, 32, 32)}
    images, masks = device_batch(batch, torch.device("cpu"))
    expected = torch.stack([torch.as_tensor(build_eval_transform(None)(image=p)["image"]) for p in pixels])
    assert images.shape == (2, 3, 32, 32) and torch.equal(images, expected)
    assert masks.dtype == torch.float32
