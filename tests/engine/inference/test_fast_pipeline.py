"""The fast predict/evaluate path equals the float evaluation transform path, and the writer writes everything."""
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from _inference_fixtures import TINY_MODEL, write_scene
from datasets import build_eval_transform, read_image
from engine.inference.postprocess import masks_at_sizes, quantize_probability, resize_probability
from engine.inference.options import MaskOptions
from engine.inference.predict import make_overlay, output_names, probability_to_mask, write_masks
from engine.inference.predictor import Predictor
from engine.inference.preprocess import DeviceNormalizer, ResizedImages, resize_like_eval
from engine.inference.writer import ImageWriter
from models import build_model

SIZES = [(50, 70), (64, 64), (33, 100), (50, 70), (90, 41), (128, 96), (64, 64)]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(5)
    return Predictor(build_model(**TINY_MODEL), torch.device("cpu"))


@pytest.mark.parametrize("net", [(64, 64), (64, 96)])
def test_uint8_resize_then_device_normalise_is_the_eval_transform(net):
    rng = np.random.default_rng(0)
    normalise = DeviceNormalizer(torch.device("cpu"))
    for h, w in [(50, 70), (64, 64), (64, 96), (800, 600), (17, 300)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = build_eval_transform(net)(image=image)["image"]
        got = normalise(torch.from_numpy(resize_like_eval(image, net))[None])[0]
        assert got.dtype == torch.float32 and got.is_contiguous()
        assert torch.equal(got, want), (h, w)


def test_device_normaliser_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        DeviceNormalizer(torch.device("cpu"))(torch.zeros(1, 8, 8, 3))


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_batched_masks_equal_per_image_resize_and_quantise(threshold):
    probs = torch.rand(len(SIZES), 1, 64, 64, generator=torch.Generator().manual_seed(1))
    got = masks_at_sizes(probs, SIZES, threshold)
    for p, size, m in zip(probs, SIZES, got):
        want = probability_to_mask(resize_probability(p, size), threshold)
        assert m.dtype == torch.uint8 and tuple(m.shape) == size
        assert np.array_equal(m.numpy(), want)


def test_predictor_masks_equal_the_float_path(predictor):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in SIZES[:4]]
    pixels = torch.stack([torch.from_numpy(resize_like_eval(im, (64, 64))) for im in images])
    floats = torch.stack([build_eval_transform(64)(image=im)["image"] for im in images])
    sizes = [im.shape[:2] for im in images]
    for got, want in zip(predictor.masks(pixels, sizes), predictor.predict_sizes(floats, sizes)):
        assert np.array_equal(got.numpy(), quantize_probability(want))


@pytest.mark.parametrize("workers", [0, 2])
def test_write_masks_equals_the_float_path_with_overlays(predictor, tmp_path, workers):
    folder = tmp_path / "in"
    paths = []
    for i, size in enumerate(SIZES):
        path = folder / f"{'a' if i % 2 else 'b'}{i // 3}.{'jpg' if i % 2 else 'png'}"
        write_scene(path, None, size, i)
        paths.append(path)
    (folder / "broken.jpg").write_bytes(b"not an image")
    paths.insert(3, folder / "broken.jpg")
    out = tmp_path / "out"
    (out / "overlay").mkdir(parents=True)
    summary = write_masks(predictor, paths, out, (64, 64), overlay=True, threshold=0.5, batch_size=3,
                          num_workers=workers, writer_threads=2, progress=False)
    assert [p.name for p, _ in summary.failed] == ["broken.jpg"] and "broken.jpg" in summary.failed[0][1]
    names = output_names(paths)
    good = [(p, n) for p, n in zip(paths, names) if p.name != "broken.jpg"]
    assert summary.masks == [out / f"{n}.png" for _, n in good]
    for path, name in good:
        image = read_image(path)
        prob = predictor.predict_sizes(build_eval_transform(64)(image=image)["image"][None], [image.shape[:2]])[0]
        want = probability_to_mask(prob, 0.5)
        assert np.array_equal(cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED), want)
        overlay = cv2.imread(str(out / "overlay" / f"{name}.jpg"))
        assert overlay.shape == image.shape
        ref_ok, ref = cv2.imencode(".jpg", cv2.cvtColor(make_overlay(image, want), cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ref_ok and (out / "overlay" / f"{name}.jpg").read_bytes() == ref.tobytes()


def test_resized_images_item_is_uint8_at_network_size(tmp_path):
    write_scene(tmp_path / "x.png", None, (50, 70), 0)
    item = ResizedImages([tmp_path / "x.png"], (64, 96))[0]
    assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (64, 96, 3)
    assert item["orig_size"].tolist() == [50, 70] and item["index"] == 0


def test_writer_writes_every_file_with_a_bounded_queue(tmp_path):
    mask = (np.arange(40 * 30) % 256).astype(np.uint8).reshape(40, 30)
    most_pending = 0
    with ImageWriter(threads=2, max_pending=3) as writer:
        for i in range(40):
            writer.submit(tmp_path / f"m{i}.png", mask)
            most_pending = max(most_pending, len(writer.pending))
    assert most_pending <= 3 and len(writer.written) == 40 and not writer.failed
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 40 and all(np.array_equal(cv2.imread(str(f), cv2.IMREAD_UNCHANGED), mask) for f in files)


def test_writer_waits_when_full(tmp_path):
    gate = threading.Event()
    with ImageWriter(threads=1, max_pending=2) as writer:
        writer.call(tmp_path / "a", gate.wait)
        writer.call(tmp_path / "b", gate.wait)
        threading.Timer(0.3, gate.set).start()
        t0 = time.perf_counter()
        writer.call(tmp_path / "c", lambda: None)  # queue full: waits for the oldest job
        assert time.perf_counter() - t0 >= 0.2


def test_writer_records_a_failed_write_and_writes_the_others(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    bad = tmp_path / "a_file" / "x.png"
    with ImageWriter(threads=1) as writer:
        writer.submit(bad, np.zeros((4, 4), np.uint8))
        writer.submit(tmp_path / "y.png", np.zeros((4, 4), np.uint8))
    assert [path for path, _ in writer.failed] == [bad]
    assert writer.written == [tmp_path / "y.png"] and (tmp_path / "y.png").stat().st_size > 0


def test_write_masks_takes_its_options_as_one_object_or_as_keywords(predictor, tmp_path):
    paths = []
    for i, size in enumerate(SIZES[:3]):
        paths.append(tmp_path / "in" / f"s{i}.png")
        write_scene(paths[-1], None, size, i)
    by_object, by_keywords = tmp_path / "object", tmp_path / "keywords"
    by_object.mkdir()
    by_keywords.mkdir()
    options = MaskOptions(threshold=0.5, batch_size=2, progress=False)
    first = write_masks(predictor, paths, by_object, (64, 64), options)
    second = write_masks(predictor, paths, by_keywords, (64, 64), threshold=0.5, batch_size=2, progress=False)
    assert [p.name for p in first.masks] == [p.name for p in second.masks] == ["s0.png", "s1.png", "s2.png"]
    for a, b in zip(first.masks, second.masks):
        assert a.read_bytes() == b.read_bytes()


def test_a_keyword_that_names_no_option_is_refused(predictor, tmp_path):
    with pytest.raises(TypeError, match="batch"):
        write_masks(predictor, [], tmp_path, (64, 64), batch=3)
