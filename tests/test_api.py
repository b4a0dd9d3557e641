"""Python API: same maps as ``predict``, every input kind, clear errors."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from _inference_fixtures import make_tiny_checkpoint, write_scene
from engine.checkpoint import CheckpointError
from engine.inference.postprocess import quantize_probability
from engine.inference import Segmenter
from engine.inference.api import to_rgb_array
from train_ultimate import main

SIZES = {"wide": (50, 70), "thin": (33, 100), "tall": (90, 41)}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", seed=3)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i, (stem, size) in enumerate(SIZES.items()):
        write_scene(folder / f"{stem}.{'jpg' if i % 2 else 'png'}", None, size, i)
    return folder


@pytest.fixture(scope="module")
def seg(ckpt) -> Segmenter:
    return Segmenter(ckpt, device="cpu", batch_size=2)


def test_api_equals_predict_cli(seg, ckpt, images, tmp_path):
    out = tmp_path / "masks"
    r = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--input", str(images), "--output", str(out),
                                  "--device", "cpu", "--num-workers", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    paths = sorted(images.iterdir())
    probs = seg.predict(paths)  # a list: batched (2 + 1)
    assert isinstance(probs, list) and len(probs) == len(paths)
    for path, prob in zip(paths, probs):
        assert prob.dtype == np.float32 and prob.shape == SIZES[path.stem]
        assert 0.0 <= prob.min() and prob.max() <= 1.0
        written = cv2.imread(str(out / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(quantize_probability(__import__("torch").from_numpy(prob)), written), path.name


def test_input_kinds_agree(seg, images):
    path = images / "wide.png"
    from_path = seg.predict(path)
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(seg.predict(rgb), from_path)
    np.testing.assert_array_equal(seg.predict(rgb[:, :, ::-1].copy(), color="bgr"), from_path)
    np.testing.assert_array_equal(seg.predict(Image.fromarray(rgb)), from_path)
    np.testing.assert_array_equal(seg(str(path)), from_path)
    # Channel order matters: the same array read as BGR is a different image.
    assert not np.array_equal(seg.predict(rgb, color="bgr"), from_path)
    # A batch gives each image the map it gets alone.
    batch = seg.predict([rgb, str(images / "tall.png")])
    np.testing.assert_allclose(batch[0], from_path, atol=1e-6)


def test_array_conversions_and_errors(tmp_path):
    gray = np.full((5, 6), 0.5, np.float32)
    rgb = to_rgb_array(gray)
    assert rgb.shape == (5, 6, 3) and rgb.dtype == np.uint8 and (rgb == 128).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2] = 200
    assert to_rgb_array(rgba, "bgr")[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(ValueError, match="'rgb' or 'bgr'"):
        to_rgb_array(rgb, "hsv")
    with pytest.raises(ValueError, match="shape"):
        to_rgb_array(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="NumPy array or a PIL image"):
        to_rgb_array(42)


def test_bad_checkpoint_and_options(ckpt, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        Segmenter(bad, device="cpu")
    with pytest.raises(CheckpointError, match="not found"):
        Segmenter(tmp_path / "missing.pt", device="cpu")
    with pytest.raises(ValueError, match="precision"):
        Segmenter(ckpt, device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="multiple of 32"):
        Segmenter(ckpt, device="cpu", img_size=50)
