"""What the demo page shows for one upload: decoding, the model's map, and the encoded panels.

The mask is made exactly as ``predict`` makes it: the file is decoded by
:func:`datasets.read_image` (through a temporary file, so every format and bit depth is read
the same way), mapped by :class:`engine.inference.api.Segmenter`, turned into a mask by
:func:`engine.inference.predict.probability_to_mask` and encoded as PNG with the encoder
settings ``predict`` writes with, so the downloaded file equals ``predict``'s ``<stem>.png``
byte for byte.
"""
from __future__ import annotations

import math
import re
import secrets
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import torch

from datasets import ImageReadError
from engine.inference.api import to_rgb_array
from engine.inference.predict import make_overlay, probability_to_mask

__all__ = [
    "DemoError",
    "DemoResult",
    "ResultStore",
    "encode_jpeg",
    "encode_png",
    "header_size",
    "not_readable",
    "parse_threshold",
    "safe_name",
    "segment_upload",
]

# Suffixes OpenCV decodes; anything else is decoded as-is (imdecode looks at the bytes, not
# the name), the suffix only keeps the temporary file recognisable.
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,5}$")
_SAFE_STEM = re.compile(r"[^\w.\- ]+")  # letters of any script stay: the mask is named as predict names it


class DemoError(Exception):
    """A request the demo refuses, with the HTTP status and a message for the page.

    Args:
        status: HTTP status code (400 not an image or a bad value, 404 unknown result,
            413 too large).
        message: what the page shows; names the problem and the fix.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message


@dataclass
class DemoResult:
    """One segmented upload.

    Attributes:
        stem: the upload's file name without its suffix (the mask downloads as ``<stem>.png``).
        rgb: the decoded image, ``(H, W, 3)`` uint8 RGB.
        prob: the probability map at the image's size, ``(H, W)`` float32 in [0, 1].
    """

    stem: str
    rgb: np.ndarray
    prob: torch.Tensor

    def mask(self, threshold: Optional[float]) -> np.ndarray:
        """The mask ``predict`` writes: 8-bit probabilities (None) or 0/255 at ``threshold``."""
        return probability_to_mask(self.prob, threshold)

    def overlay(self, threshold: Optional[float]) -> np.ndarray:
        """The mask tinted on the image, as ``predict --overlay`` draws it (RGB uint8)."""
        return make_overlay(self.rgb, self.mask(threshold))


def parse_threshold(value: Optional[str]) -> Optional[float]:
    """The page's threshold: None (or 0) for the probability map, else a probability in (0, 1].

    Raises:
        DemoError: 400 for a value that is not a number in [0, 1].
    """
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise DemoError(400, f"threshold={value!r}: use a number from 0 (probability map) to 1.")
    return number or None  # 0 shows the probability map, as predict without --threshold


def safe_name(filename: str) -> tuple:
    """``(stem, suffix)`` of an uploaded name, stripped of folders and unprintable characters."""
    name = Path(str(filename).replace("\\", "/")).name
    path = Path(name)
    stem = _SAFE_STEM.sub("_", path.stem).strip(" .") or "image"
    suffix = path.suffix if _SAFE_SUFFIX.match(path.suffix) else ".img"
    return stem[:120], suffix.lower()


def not_readable(stem: str, suffix: str) -> str:
    """The page's message for a file that decodes neither as an image nor as a video."""
    return (f"{stem}{suffix} is not an image or a video this demo can read: pick a PNG or JPEG image "
            f"or an MP4 video.")


def header_size(data: bytes) -> Optional[tuple]:
    """``(width, height)`` from an image file's header, without decoding its pixels.

    None when Pillow is missing or does not know the format (OpenCV may still decode it).
    """
    import io
    import warnings

    try:
        from PIL import Image
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own bomb warning: the caller decides on the size
        try:
            with Image.open(io.BytesIO(data)) as image:
                return tuple(image.size)
        except Image.DecompressionBombError:
            return (Image.MAX_IMAGE_PIXELS * 2 + 1, 1)  # more pixels than Pillow opens at all
        except Exception:  # not a format Pillow knows: OpenCV has the last word
            return None


def _check_pixels(data: bytes, max_pixels: Optional[int]) -> None:
    """Refuse a small file that would decode to a huge image (a compressed "bomb") before decoding."""
    size = header_size(data) if max_pixels else None
    if size is not None and size[0] * size[1] > max_pixels:
        raise DemoError(413, f"The image has {size[0] * size[1] / 1e6:.0f} megapixels, more than the "
                             f"{max_pixels / 1e6:g} MP limit: pick a smaller image.")


def segment_upload(segmenter: Any, data: bytes, filename: str, max_pixels: Optional[int] = None) -> DemoResult:
    """Decode an uploaded file and run the model on it.

    Args:
        segmenter: a :class:`engine.inference.api.Segmenter`.
        data: the file's bytes.
        filename: its name as the browser sent it (only the stem and suffix are used).
        max_pixels: refuse images with more pixels than this (None: no limit).

    Raises:
        DemoError: 400 when the bytes are empty or not a decodable image; 413 when the image
            has more than ``max_pixels`` pixels.
    """
    stem, suffix = safe_name(filename)
    if not data:
        raise DemoError(400, "The file is empty: pick a PNG or JPEG image.")
    _check_pixels(data, max_pixels)
    with tempfile.TemporaryDirectory(prefix="camoxpert-demo-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            rgb = to_rgb_array(path)  # read_image: predict's decoder, whatever the format
        except ImageReadError:
            raise DemoError(400, not_readable(stem, suffix)) from None
    prob = segmenter.predict(rgb)
    return DemoResult(stem=stem, rgb=rgb, prob=torch.from_numpy(prob))


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes as ``predict`` writes them (``cv2.imencode`` with default settings).

    Args:
        image: grey ``(H, W)`` or BGR ``(H, W, 3)`` uint8.
    """
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for an array of shape {image.shape}")
    return data.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """JPEG bytes of an RGB image, at the quality ``predict`` writes overlays with."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for an array of shape {rgb.shape}")
    return data.tobytes()


class ResultStore:
    """The latest results by id, the oldest dropped first, safe to use from several threads.

    The page asks for the mask again whenever the slider moves, so the model runs once per
    upload; the bound keeps memory flat however long the server runs.

    Args:
        capacity: results kept.
    """

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = max(1, int(capacity))
        self._items: "OrderedDict[str, DemoResult]" = OrderedDict()
        self._lock = threading.Lock()

    def add(self, result: DemoResult) -> str:
        """Keep ``result``; returns its id."""
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._items[key] = result
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> DemoResult:
        """The result with id ``key``.

        Raises:
            DemoError: 404 when it is unknown or was dropped for newer ones.
        """
        with self._lock:
            result = self._items.get(key)
            if result is not None:
                self._items.move_to_end(key)
        if result is None:
            raise DemoError(404, "This result is no longer kept: drop the file again.")
        return result
