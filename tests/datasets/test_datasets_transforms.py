"""Transforms: output shapes, mask kept aligned with the image, colour ops leave the mask alone."""

import numpy as np
import pytest
import torch

from datasets import build_eval_transform, build_train_transform
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize


def _scene(h=48, w=64, seed=0):
    """Image whose brightness *is* the mask: white object on black, so alignment is checkable."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.float32)
    y, x = rng.integers(4, h // 2), rng.integers(4, w // 2)
    mask[y: y + h // 3, x: x + w // 4] = 1.0
    mask[h - 10: h - 4, w - 14: w - 4] = 1.0  # second blob breaks symmetries
    image = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
    return image, mask


@pytest.mark.parametrize("size, hw", [(32, (32, 32)), ((24, 40), (24, 40))])
def test_output_shapes_and_dtypes(size, hw):
    image, mask = _scene()
    for transform in (build_train_transform(size), build_eval_transform(size)):
        out = transform(image=image, mask=mask)
        assert out["image"].shape == (3, *hw) and out["image"].dtype == torch.float32
        assert out["mask"].shape == hw and out["mask"].dtype == torch.float32
        assert 0.0 <= float(out["mask"].min()) and float(out["mask"].max()) <= 1.0


def test_eval_transform_normalizes_with_imagenet_stats():
    image = np.full((8, 8, 3), 255, np.uint8)
    out = build_eval_transform(None)(image=image)["image"]
    expected = [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    np.testing.assert_allclose(out[:, 0, 0].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(denormalize(out).numpy(), 1.0, atol=1e-5)


def test_horizontal_flip_moves_mask_with_image():
    image, mask = _scene()
    off = dict(crop_p=0.0, rotate_p=0.0, color_p=0.0, vflip_p=0.0)
    out = build_train_transform((48, 64), dict(off, hflip_p=1.0))(image=image, mask=mask)
    np.testing.assert_allclose(out["mask"].numpy(), mask[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(denormalize(out["image"])[0].numpy(), mask[:, ::-1], atol=1e-2)


@pytest.mark.parametrize("seed", range(6))
def test_all_geometric_ops_keep_mask_aligned(seed):
    image, mask = _scene(seed=seed)
    aug = dict(hflip_p=0.5, vflip_p=0.5, crop_p=1.0, rotate_p=1.0, rotate=30.0, color_p=0.0)
    transform = build_train_transform(40, aug)
    transform.set_random_seed(seed)
    out = transform(image=image, mask=mask)
    brightness = denormalize(out["image"])[0].numpy()
    assert out["mask"].sum() > 0
    # Same interpolation on both: the image's brightness reproduces the mask.
    assert np.abs(brightness - out["mask"].numpy()).max() < 0.02


def test_colour_jitter_changes_image_not_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = (rng.random((32, 32)) > 0.5).astype(np.float32)
    aug = dict(hflip_p=0.0, crop_p=0.0, rotate_p=0.0, color_p=1.0, brightness=0.5)
    jitter = build_train_transform(32, aug)
    plain = build_eval_transform(32)
    jitter.set_random_seed(1)
    out = jitter(image=image, mask=mask)
    ref = plain(image=image, mask=mask)
    np.testing.assert_array_equal(out["mask"].numpy(), mask)
    assert not torch.allclose(out["image"], ref["image"])


def test_soft_mask_values_survive_resize():
    mask = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    image = np.zeros((64, 64, 3), np.uint8)
    out = build_eval_transform(32)(image=image, mask=mask)["mask"].numpy()
    assert 0.2 < out[0, 10] < 0.5  # interpolated, not snapped to 0/1


def test_unknown_option_is_rejected_with_valid_list():
    with pytest.raises(ValueError, match="hflip_p"):
        build_train_transform(32, {"hflip": 0.5})
    with pytest.raises(ValueError, match="reflect"):
        build_train_transform(32, {"border": "wrap-around"})


_COUNT_VERSION_CHECKS = """
import urllib.request
calls = []
def no_network(self, *args, **kwargs):
    calls.append(args)
    raise OSError("no network in this test")
urllib.request.OpenerDirector.open = no_network
import datasets.transforms
print(len(calls))
"""


@pytest.mark.parametrize("user_setting, expected_calls", [(None, "0"), ("0", "1")])
def test_albumentations_update_check_is_off_unless_the_user_asks(user_setting, expected_calls):
    # Albumentations asks PyPI for a newer version at import; the toolkit turns that off (no
    # network round trip per process and per spawned worker), but a user's own setting wins.
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    if user_setting is not None:
        env["NO_ALBUMENTATIONS_UPDATE"] = user_setting
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _COUNT_VERSION_CHECKS], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == expected_calls
