"""Data for the learning-quality benchmark: a train and a test split held in tensors.

Training images and masks are decoded once, resized to the training size and kept as uint8
tensors on the device, so every variant trains on exactly the same pixels and no data loader
competes for the time budget. Test images are resized for the model; their masks stay at their
own size, where PySODMetrics scores them (predictions are resized to the mask, never the mask).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

__all__ = ["QualityData", "SplitSizes", "load_quality_data", "resolve_quality_samples"]


@dataclass
class QualityData:
    """The benchmark's data, ready for the bare training loop.

    Attributes:
        name: where the data came from (``synthetic 600/150 @416px`` or the dataset paths).
        train_images: (N, 3, S, S) uint8 RGB on the device.
        train_masks: (N, 1, S, S) uint8 0-255 on the device (soft edges kept).
        test_images: (M, 3, S, S) uint8 RGB on the device.
        test_gts: M uint8 masks (0-255) at their own sizes.
    """

    name: str
    train_images: torch.Tensor
    train_masks: torch.Tensor
    test_images: torch.Tensor
    test_gts: List[np.ndarray]


def _read_pair(sample, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    from datasets.io import read_image, read_mask

    image = read_image(sample.image)
    mask = read_mask(sample.mask, size=image.shape[:2])  # float [0, 1] at the image's size
    gt = (mask * 255.0).round().astype(np.uint8)
    image_s = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    mask_s = cv2.resize(gt, (size, size), interpolation=cv2.INTER_LINEAR)
    return image_s, mask_s, gt


def _stack(samples: Sequence, size: int, device: torch.device, workers: int):
    with ThreadPoolExecutor(max_workers=workers) as pool:  # OpenCV decodes outside the GIL
        pairs = list(pool.map(lambda s: _read_pair(s, size), samples))
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2)  # (N, 3, S, S)
    masks = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]  # (N, 1, S, S)
    return images.contiguous().to(device), masks.contiguous().to(device), [p[2] for p in pairs]


def resolve_quality_samples(
    dataset_paths: Sequence[str],
    n_train: int,
    n_test: int,
    synthetic_size: int,
    seed: int = 0,
    cache_dir: Optional[str] = None,
):
    """Train and test samples: from ``dataset_paths`` or the built-in synthetic set.

    Returns:
        ``(name, train_samples, test_samples)``.

    Raises:
        ValueError: the dataset paths hold no test split (the benchmark never scores on the
            images it trained on).
    """
    from datasets.layouts import combine, discover_dataset

    if dataset_paths:
        splits = combine([discover_dataset(p) for p in dataset_paths])
        test = [s for name in sorted(splits.tests) for s in splits.tests[name]]
        train_images = {s.image for s in splits.train}
        test = [s for s in test if s.image not in train_images]
        if not splits.train or not test:
            raise ValueError(
                f"{', '.join(map(str, dataset_paths))}: the quality benchmark needs a train split and a "
                f"separate test split (found train {len(splits.train)}, test {len(test)}). Use a layout "
                f"with both, e.g. COD10K-v3 Train/ and Test/, or TrainDataset/ + TestDataset/<NAME>/."
            )
        return ", ".join(map(str, dataset_paths)), list(splits.train), test
    from datasets.synthetic import ensure_synthetic_dataset

    root = ensure_synthetic_dataset(
        cache_dir=cache_dir, n_train=n_train, n_test=n_test, img_size=synthetic_size, seed=seed
    )
    splits = discover_dataset(root)
    test = [s for t in splits.tests.values() for s in t]
    return f"synthetic {len(splits.train)}/{len(test)} @{synthetic_size}px", list(splits.train), test


@dataclass
class SplitSizes:
    """How many images each split holds.

    Attributes:
        n_train: training images of the synthetic set (ignored with dataset paths).
        n_test: test images of the synthetic set (ignored with dataset paths).
        synthetic_size: resolution the synthetic set is generated at (None: the input size).
        max_train: use only the first images of the train split (quick runs).
        max_test: use only the first images of the test split.
    """

    n_train: int = 600
    n_test: int = 150
    synthetic_size: Optional[int] = None
    max_train: Optional[int] = None
    max_test: Optional[int] = None


def load_quality_data(dataset_paths: Sequence[str], img_size: int, device: torch.device,
                      sizes: Optional[SplitSizes] = None, workers: int = 8) -> QualityData:
    """Decode the benchmark's train and test splits into tensors on ``device``.

    Args:
        dataset_paths: dataset folders; empty means the built-in synthetic set.
        img_size: training and test input size (multiple of 32).
        device: where the tensors live.
        sizes: split sizes (default: :class:`SplitSizes`).
        workers: decoding threads.
    """
    sizes = sizes or SplitSizes()
    if img_size % 32:
        raise ValueError(f"img_size must be a multiple of 32, got {img_size}.")
    name, train, test = resolve_quality_samples(dataset_paths, sizes.n_train, sizes.n_test,
                                                sizes.synthetic_size or img_size)
    train, test = train[:sizes.max_train], test[:sizes.max_test]
    train_images, train_masks, _ = _stack(train, img_size, device, workers)
    test_images, _, test_gts = _stack(test, img_size, device, workers)
    return QualityData(name, train_images, train_masks, test_images, test_gts)
