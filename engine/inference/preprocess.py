"""Network inputs for ``predict`` and ``evaluate``: decode+resize in workers, normalise on the device.

The evaluation transform (:func:`datasets.build_eval_transform`) resizes with OpenCV and then
normalises to float32 on the CPU. Here the worker stops after the resize and ships uint8
``(H, W, 3)`` pixels (a quarter of the bytes through shared memory, pinning and the PCIe copy),
and :class:`DeviceNormalizer` finishes on the device with a lookup table made by running the very
same normalisation over every pixel value, so the network sees bit-identical inputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datasets import build_eval_transform, read_image
from datasets.workers import limit_cpu_threads
from engine.files import PathLike

__all__ = ["DeviceNormalizer", "ResizedImages", "inference_loader", "resize_like_eval"]


def resize_like_eval(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, 3)`` uint8 to ``size`` ``(height, width)`` as the evaluation transform does.

    ``A.Resize(interpolation=cv2.INTER_LINEAR)`` is ``cv2.resize`` with that interpolation; a
    test checks the two agree bit for bit.
    """
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


class ResizedImages(Dataset):
    """Image files decoded and resized to the network size, as uint8.

    Each item: ``"image"`` uint8 ``(h, w, 3)`` RGB tensor at the network size, ``"orig_size"``
    int64 ``[H, W]`` of the file, ``"index"``.

    Args:
        paths: image files.
        img_size: network ``(height, width)``.
    """

    def __init__(self, paths: Sequence[PathLike], img_size: Tuple[int, int]) -> None:
        self.paths: List[Path] = [Path(p) for p in paths]
        self.img_size = (int(img_size[0]), int(img_size[1]))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Dict[str, object]:
        image = read_image(self.paths[index])
        small = np.ascontiguousarray(resize_like_eval(image, self.img_size))
        return {
            "image": torch.from_numpy(small),  # (h, w, 3) uint8
            "orig_size": torch.tensor(image.shape[:2], dtype=torch.long),
            "index": index,
        }


class DeviceNormalizer:
    """uint8 ``(B, h, w, 3)`` RGB pixels -> the float32 ``(B, 3, h, w)`` the evaluation transform makes.

    The table holds, for each channel and pixel value, what ``build_eval_transform`` produces for
    it (normalisation is per pixel and per channel), so the result is equal bit for bit.

    Args:
        device: where the table lives and the batches are normalised.
    """

    def __init__(self, device: torch.device) -> None:
        ramp = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)  # (256, 1, 3)
        table = build_eval_transform(None)(image=ramp)["image"]  # (3, 256, 1) float32
        self.device = torch.device(device)
        self.table = torch.as_tensor(table).reshape(3 * 256).to(self.device)  # channel c at [256c, 256c + 255]
        self.offsets = torch.arange(3, device=self.device, dtype=torch.int32) * 256  # (3,)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Move ``pixels`` to the device (asynchronously when pinned) and normalise them.

        Args:
            pixels: ``(B, h, w, 3)`` uint8.

        Returns:
            ``(B, 3, h, w)`` float32, contiguous, on the device.
        """
        if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"Expected (B, h, w, 3) uint8 pixels; got {tuple(pixels.shape)} {pixels.dtype}.")
        x = pixels.to(self.device, non_blocking=True)
        index = x.to(torch.int32) + self.offsets  # (B, h, w, 3): row of the table for each value
        return self.table[index].permute(0, 3, 1, 2).contiguous()  # (B, 3, h, w)


def _init_worker(worker_id: int) -> None:
    limit_cpu_threads()  # one OpenCV thread per worker process: the workers are the parallelism


def inference_loader(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device,
                     collate_fn: Optional[Callable[[List[Dict[str, Any]]], Any]] = None) -> DataLoader:
    """The DataLoader ``predict`` and ``evaluate`` read batches from.

    In order, no shuffling; pinned batches on a GPU so the copy to it is asynchronous.
    """
    workers = int(num_workers)
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=False, num_workers=workers,
                      pin_memory=torch.device(device).type == "cuda", collate_fn=collate_fn,
                      worker_init_fn=_init_worker if workers else None,
                      prefetch_factor=4 if workers else None, persistent_workers=False)
