"""Tiny checkpoints and image folders for the evaluate/predict tests (no training needed)."""
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.checkpoint import save_checkpoint
from models import build_model

TINY_MODEL = dict(backbone="edgenext_xx_small", num_experts=2, top_k=1, dim=16)
# COD10K-style names (categories parsed from them) with odd sizes (H, W), none a multiple of 32.
COD10K_TEST = [
    ("COD10K-CAM-1-Aquatic-3-Flounder-11", (50, 70)),
    ("COD10K-CAM-1-Aquatic-7-Crab-12", (64, 48)),
    ("COD10K-CAM-3-Flying-53-Owl-13", (45, 60)),
    ("COD10K-CAM-3-Flying-53-Owl-14", (70, 52)),
    ("COD10K-CAM-2-Terrestrial-23-Cat-15", (40, 90)),
]


def make_tiny_checkpoint(path: Path, img_size=64, seed: int = 0, data_config=None) -> Path:
    """A checkpoint as ``train`` writes it, holding a small random model.

    ``data_config`` adds keys to the run config's ``data`` section (e.g. ``synthetic``).
    """
    torch.manual_seed(seed)
    model = build_model(**TINY_MODEL)
    state = {
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "ema": None,
        "config": {"data": {"img_size": img_size, **(data_config or {})}},
    }
    return save_checkpoint(state, path)


def write_scene(image_path: Path, mask_path, size, seed: int) -> None:
    """A textured image with a brighter ellipse, and its 0/255 mask."""
    h, w = size
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (max(3, w // 4), max(3, h // 5)), 15, 0, 360, 255, -1)
    image = rng.integers(40, 140, size=(h, w, 3), dtype=np.uint8)
    image[mask > 0] = np.clip(image[mask > 0].astype(int) + 60, 0, 255).astype(np.uint8)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(image_path), image)
    if mask_path is not None:
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(mask_path), mask)


def write_cod10k_layout(root: Path, with_test: bool = True, n_train: int = 2) -> Path:
    """A small COD10K-v3 folder: ``Train/{Image,GT_Object}`` and ``Test/{Image,GT_Object}``."""
    for i in range(n_train):
        name = f"COD10K-CAM-1-Aquatic-3-Flounder-{100 + i}"
        write_scene(root / "Train/Image" / f"{name}.jpg", root / "Train/GT_Object" / f"{name}.png", (48, 64), 100 + i)
    if with_test:
        for i, (name, size) in enumerate(COD10K_TEST):
            write_scene(root / "Test/Image" / f"{name}.png", root / "Test/GT_Object" / f"{name}.png", size, i)
    return root
