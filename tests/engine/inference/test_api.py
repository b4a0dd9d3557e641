"""Python API: same maps as ``predict``, every input kind, clear errors."""
import re
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


@pytest.mark.parametrize("to_pil", [
    lambda a: Image.fromarray(a),                    # mode "I;16", as Pillow opens 16-bit PNGs
    lambda a: Image.fromarray(a.astype(np.int32)),   # mode "I", as older Pillow opens them
])
def test_16_bit_pil_image_is_read_like_its_file(seg, tmp_path, to_pil):
    # A gradient using the whole 16-bit range: convert("RGB") would clip nearly all of it to white.
    ramp = (np.linspace(0, 65535, 48 * 40).reshape(48, 40)).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    cv2.imwrite(str(path), ramp)
    pil = to_pil(ramp)
    np.testing.assert_array_equal(to_rgb_array(pil), to_rgb_array(path))
    np.testing.assert_array_equal(seg.predict(pil), seg.predict(path))


def test_pil_int_image_outside_16_bits_is_refused():
    with pytest.raises(ValueError, match="16-bit"):
        to_rgb_array(Image.fromarray(np.full((4, 4), 70000, np.int32)))


def test_float_array_outside_0_1_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\].*uint8"):
        to_rgb_array(np.full((4, 4, 3), 200.0, np.float32))  # 0-255 floats: clipping would make it white
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_rgb_array(np.full((4, 4), np.nan, np.float32))
    # Resampling overshoot within one 8-bit level is clipped, not refused.
    assert (to_rgb_array(np.full((4, 4), 1.002, np.float32)) == 255).all()


@pytest.mark.parametrize("shape", [(0, 0), (0, 5, 3), (4, 0, 3)])
def test_empty_array_is_a_value_error(seg, shape):
    with pytest.raises(ValueError, match=r"Empty image array of shape \(" + ", ".join(map(str, shape))):
        seg.predict(np.zeros(shape, np.uint8))


def test_non_positive_tta_scale_is_refused_like_the_cli(ckpt):
    from engine.inference.predictor import parse_tta_scales

    with pytest.raises(ValueError) as cli_error:
        parse_tta_scales("0")
    for scales, bad in (((0,), 0.0), ((1.0, -0.5), -0.5)):
        with pytest.raises(ValueError) as info:
            Segmenter(ckpt, device="cpu", tta_scales=scales)
        assert float(re.search(r"-?\d+(?:\.\d+)?", str(info.value)).group()) == bad  # names the bad scale
    with pytest.raises(ValueError) as api_error:
        Segmenter(ckpt, device="cpu", tta_scales=(0,))
    assert str(api_error.value) == str(cli_error.value)
