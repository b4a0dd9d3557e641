"""CODDataset / ImageFolderDataset outputs, input expansion, train/val split, worker seeding."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from _datasets_helpers import write_image, write_mask, write_pairs
from datasets import (
    CODDataset,
    ImageFolderDataset,
    SampleRef,
    build_eval_transform,
    build_train_transform,
    discover_dataset,
    expand_inputs,
    split_train_val,
    worker_init_fn,
)


@pytest.fixture()
def samples(tmp_path):
    root = tmp_path / "set"
    write_pairs(root / "Image", root / "GT", ["a", "b", "c"], size=(40, 56))
    return discover_dataset(root).train


def test_cod_dataset_item_shapes_and_types(samples):
    dataset = CODDataset(samples, build_train_transform(32))
    item = dataset[1]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, 32, 32) and item["mask"].dtype == torch.float32
    assert 0.0 <= item["mask"].min() and item["mask"].max() <= 1.0 and item["mask"].max() > 0
    assert item["orig_size"].dtype == torch.int64
    assert item["orig_size"].tolist() == [40, 56]
    assert item["index"] == 1 and item["name"] == "b"
    assert dataset.samples[item["index"]].image.name == "b.jpg"


def test_default_collate_batches_items(samples):
    loader = DataLoader(CODDataset(samples, build_eval_transform((24, 32))), batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 24, 32)
    assert batch["mask"].shape == (3, 1, 24, 32)
    assert batch["orig_size"].tolist() == [[40, 56]] * 3
    assert batch["index"].tolist() == [0, 1, 2]
    assert batch["name"] == ["a", "b", "c"]


def test_no_transform_keeps_original_size(samples):
    item = CODDataset(samples)[0]
    assert item["image"].shape == (3, 40, 56) and item["mask"].shape == (1, 40, 56)


def test_cache_keeps_shrunk_uint8_copies(samples):
    dataset = CODDataset(samples, build_eval_transform(16), cache_size=20)
    dataset.preload(progress=False)
    assert len(dataset._cache) == 3
    image, mask_u8, orig = dataset._cache[0]
    assert image.dtype == np.uint8 and mask_u8.dtype == np.uint8
    assert min(image.shape[:2]) == 20 and image.shape[:2] == mask_u8.shape
    assert orig == (40, 56)
    item = dataset[0]
    assert item["image"].shape == (3, 16, 16)
    assert item["orig_size"].tolist() == [40, 56]
    uncached = CODDataset(samples, build_eval_transform(16))[0]
    assert torch.allclose(item["mask"], uncached["mask"], atol=0.1)


def test_sample_without_mask_is_refused(tmp_path):
    sample = SampleRef.from_paths(write_image(tmp_path / "lonely.jpg"))
    with pytest.raises(ValueError, match="lonely.jpg"):
        CODDataset([sample])


def test_size_mismatch_at_load_names_both_files(tmp_path):
    image = write_image(tmp_path / "i.jpg", size=(32, 32))
    mask = write_mask(tmp_path / "m.png", size=(30, 32))
    with pytest.raises(ValueError, match="i.jpg.*m.png"):
        CODDataset([SampleRef.from_paths(image, mask)])[0]


def test_image_folder_dataset(tmp_path):
    paths = [write_image(tmp_path / "x.png", size=(20, 30)), write_image(tmp_path / "y.jpg", size=(36, 24))]
    dataset = ImageFolderDataset(paths, build_eval_transform(16))
    item = dataset[1]
    assert set(item) == {"image", "orig_size", "index", "name"}
    assert item["image"].shape == (3, 16, 16)
    assert item["orig_size"].tolist() == [36, 24]
    assert item["name"] == "y" and dataset.paths[item["index"]] == paths[1]


def test_expand_inputs_folder_glob_file_and_missing(tmp_path):
    shots = tmp_path / "shots"
    a = write_image(shots / "a.jpg")
    b = write_image(shots / "b.PNG")
    (shots / "notes.txt").write_text("x")
    c = write_image(tmp_path / "deep" / "sub" / "c.jpg")

    assert expand_inputs(shots) == [a, b]
    assert expand_inputs(str(shots / "*.jpg")) == [a]
    assert expand_inputs([str(tmp_path / "**" / "*.jpg")]) == [c, a]  # sorted paths
    assert expand_inputs([a, shots]) == [a, b]  # duplicates dropped, order kept
    assert expand_inputs(tmp_path / "deep", recursive=True) == [c]

    with pytest.raises(FileNotFoundError) as info:
        expand_inputs([a, tmp_path / "nope.jpg", str(tmp_path / "*.bmp"), shots / "notes.txt"])
    message = str(info.value)
    assert "nope.jpg" in message and "*.bmp" in message and "notes.txt" in message
    assert str(a) not in message


def _refs(n):
    return [SampleRef.from_paths(f"/data/img{i:03d}.jpg", f"/data/gt{i:03d}.png") for i in range(n)]


def test_split_train_val_is_deterministic_and_disjoint():
    refs = _refs(50)
    train, val = split_train_val(refs, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert {s.image for s in train}.isdisjoint(s.image for s in val)
    assert {s.image for s in train} | {s.image for s in val} == {s.image for s in refs}
    assert split_train_val(refs, 0.2, seed=3) == (train, val)
    assert split_train_val(list(reversed(refs)), 0.2, seed=3)[1] == list(reversed(val))  # order-free
    assert split_train_val(refs, 0.2, seed=4)[1] != val


def test_split_train_val_edge_cases():
    assert split_train_val(_refs(5), 0.0) == (_refs(5), [])
    train, val = split_train_val(_refs(3), 0.01)
    assert len(val) == 1 and len(train) == 2
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(_refs(3), 1.0)


def test_worker_init_fn_gives_workers_different_augmentations(samples):
    # Every index holds the same sample: only the augmentation can differ.
    dataset = CODDataset([samples[0]] * 4, build_train_transform(
        24, dict(crop_p=1.0, crop_scale=(0.2, 0.5), rotate_p=1.0, color_p=1.0)))
    firsts = []
    for init in (None, worker_init_fn):
        torch.manual_seed(0)
        loader = DataLoader(Subset(dataset, range(4)), batch_size=1, num_workers=2, worker_init_fn=init)
        images = [batch["image"] for batch in loader]  # worker 0: items 0, 2; worker 1: items 1, 3
        firsts.append(torch.equal(images[0], images[1]))
    # Forked workers share albumentations' generator state unless reseeded.
    assert firsts == [True, False]
