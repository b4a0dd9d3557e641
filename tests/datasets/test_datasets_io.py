"""Image and mask readers: grayscale, RGBA, 16-bit, soft and colour masks, errors naming the file."""

import cv2
import numpy as np
import pytest

from _datasets_helpers import write_image
from datasets import ImageReadError, read_image, read_mask


def test_colour_image_is_rgb_uint8(tmp_path):
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's BGR order
    path = tmp_path / "blue.png"
    cv2.imwrite(str(path), bgr)
    image = read_image(path)
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [0, 0, 200]


def test_grayscale_image_gets_three_equal_channels(tmp_path):
    path = write_image(tmp_path / "g.jpg", size=(24, 40), gray=True)
    image = read_image(path)
    assert image.shape == (24, 40, 3)
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])


def test_rgba_image_drops_alpha(tmp_path):
    bgra = np.zeros((16, 16, 4), np.uint8)
    bgra[..., 2] = 255  # red
    bgra[..., 3] = 10  # nearly transparent
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), bgra)
    image = read_image(path)
    assert image.shape == (16, 16, 3)
    assert image[0, 0].tolist() == [255, 0, 0]


def test_16bit_image_scaled_to_8bit(tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((8, 8, 3), 65535, np.uint16))
    image = read_image(path)
    assert image.dtype == np.uint8 and image.max() == 255 and image.min() == 255
    cv2.imwrite(str(path), np.full((8, 8), 257 * 100, np.uint16))  # 16-bit gray
    assert read_image(path)[0, 0].tolist() == [100, 100, 100]


def test_soft_mask_keeps_intermediate_values(tmp_path):
    mask = np.tile(np.arange(0, 256, 17, dtype=np.uint8), (4, 1))
    path = tmp_path / "soft.png"
    cv2.imwrite(str(path), mask)
    out = read_mask(path)
    assert out.dtype == np.float32 and out.shape == mask.shape
    np.testing.assert_allclose(out, mask / 255.0, atol=1e-6)


def test_16bit_mask_scaled(tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.array([[0, 32768, 65535]], np.uint16))
    np.testing.assert_allclose(read_mask(path), [[0.0, 32768 / 65535, 1.0]], atol=1e-6)


def test_label_map_mask_with_values_0_and_1(tmp_path):
    path = tmp_path / "labels.png"
    cv2.imwrite(str(path), np.array([[0, 1], [1, 0]], np.uint8))
    np.testing.assert_array_equal(read_mask(path), [[0.0, 1.0], [1.0, 0.0]])


def test_colour_and_alpha_masks(tmp_path):
    red = np.zeros((4, 4, 3), np.uint8)
    red[1:3, 1:3, 2] = 255  # object drawn in pure red
    cv2.imwrite(str(tmp_path / "red.png"), red)
    expected = np.zeros((4, 4), np.float32)
    expected[1:3, 1:3] = 1.0
    np.testing.assert_array_equal(read_mask(tmp_path / "red.png"), expected)

    layer = np.zeros((4, 4, 4), np.uint8)
    layer[..., 3] = (expected * 255).astype(np.uint8)  # object only in alpha
    cv2.imwrite(str(tmp_path / "alpha.png"), layer)
    np.testing.assert_array_equal(read_mask(tmp_path / "alpha.png"), expected)


def test_read_mask_resizes_on_request(tmp_path):
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.full((10, 20), 255, np.uint8))
    assert read_mask(path, size=(5, 7)).shape == (5, 7)


def test_reduced_decode(tmp_path):
    path = write_image(tmp_path / "big.jpg", size=(64, 48))
    assert read_image(path, reduce=2).shape == (32, 24, 3)


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_errors_name_the_file(tmp_path, reader):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"garbage" * 20)
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        reader(corrupt)
    with pytest.raises(ImageReadError, match="missing.png"):
        reader(tmp_path / "missing.png")
