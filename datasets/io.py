"""Decode images and masks into the arrays the pipeline works on.

Both readers ignore EXIF orientation: COD ground truths were drawn on the
stored pixel grid (PIL, which most COD code uses, does not rotate either), so
rotating the photo but not the PNG mask would misalign them.

Files are read with ``np.fromfile`` + ``cv2.imdecode`` and written with
``cv2.imencode`` + :func:`datasets.files.atomic_write_bytes`, never
``cv2.imread``/``imwrite``: given a file name that is not valid UTF-8 (Python
holds its bytes as surrogates), those crash the interpreter with a segmentation
fault; NumPy and Python pass the original bytes to the OS. Nor ``ndarray.tofile``
for writing: it reports no error when the disk fills up and leaves an empty file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ._types import PathLike
from .files import atomic_write_bytes

__all__ = ["ImageReadError", "display_path", "read_image", "read_mask", "to_uint8", "write_image"]


_FLAGS = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION


class ImageReadError(OSError):
    """Raised when an image or mask file cannot be decoded; names the file."""


def display_path(path: PathLike) -> str:
    """``path`` as printable text: bytes that are not valid UTF-8 shown as ``\\xNN``.

    Printing a name that holds undecodable bytes raises ``UnicodeEncodeError``;
    this form names the file unambiguously instead.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def write_image(path: PathLike, image: np.ndarray, params: Sequence[int] = ()) -> Path:
    """Encode ``image`` in the format of ``path``'s suffix, in memory, and write it atomically.

    Args:
        path: Target file (``.png``, ``.jpg``...).
        image: uint8 array, ``(H, W)`` or ``(H, W, 3)`` in BGR order.
        params: OpenCV encoder flags, e.g. ``[cv2.IMWRITE_JPEG_QUALITY, 92]``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: If the image cannot be encoded; names the file.
        datasets.files.FileWriteError: If the bytes did not all land (full disk, read-only
            folder); names the file, and an earlier file of that name is left as it was.
    """
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".png", image, list(params))
    if not ok:
        raise OSError(f"{display_path(path)}: OpenCV cannot encode a {image.shape} {image.dtype} image "
                      f"as {path.suffix or '.png'}.")
    return atomic_write_bytes(path, data.tobytes())


def _decode(path: PathLike, reduce: int = 1) -> np.ndarray:
    path = Path(path)
    try:
        # np.fromfile + imdecode instead of imread: imread fails on non-ASCII
        # paths on Windows, and this also separates "missing" from "corrupt".
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"{display_path(path)}: cannot read file ({exc.strerror or exc}).") from exc
    if reduce > 1:
        # DCT-domain downscaling: JPEG decode at 1/2, 1/4 or 1/8 resolution is
        # several times faster than decoding full size and resizing.
        flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
        image = cv2.imdecode(data, flag | cv2.IMREAD_IGNORE_ORIENTATION)
    else:
        image = cv2.imdecode(data, _FLAGS)
    if image is None or image.size == 0:
        raise ImageReadError(
            f"{display_path(path)}: not a decodable image (empty, corrupt or unsupported format). "
            f"Re-export it as PNG/JPEG or remove it."
        )
    return image


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an image array of any common dtype to uint8.

    Args:
        array: uint8, uint16 (full 16-bit range), bool, or float (``[0, 1]``) data.

    Returns:
        uint8 array of the same shape.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        # 65535 / 257 = 255 exactly, so full-range 16-bit maps onto full 8-bit.
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def read_image(path: PathLike, reduce: int = 1) -> np.ndarray:
    """Read an image as RGB uint8.

    Grayscale is replicated to three channels, alpha is dropped, 16-bit and
    float data are scaled to 8 bits.

    Args:
        path: Image file.
        reduce: Decode at ``1/reduce`` size (1, 2, 4 or 8); only JPEGs decode
            faster this way, other formats are resized after decoding.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ImageReadError: If the file is missing or cannot be decoded.
    """
    image = _decode(path, reduce)
    image = to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:  # gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: PathLike, size: Optional[tuple] = None) -> np.ndarray:
    """Read a ground-truth mask as float32 in ``[0, 1]``.

    Anti-aliased (soft) masks keep their intermediate values; 16-bit masks
    are scaled by 65535. Colour masks use the brightest channel, so an object
    drawn in pure red still counts as foreground. An RGBA mask whose colour
    channels are uniform but whose alpha varies (object painted on a
    transparent layer) uses the alpha channel. A uint8 mask whose maximum
    is 1 is a 0/1 label map and is taken as is rather than divided by 255.

    Args:
        path: Mask file.
        size: Optional ``(height, width)`` to resize to (bilinear, which keeps
            soft edges).

    Returns:
        ``(H, W)`` float32 array in ``[0, 1]``.

    Raises:
        ImageReadError: If the file is missing or cannot be decoded.
    """
    mask = _decode(path)
    if mask.ndim == 3:
        if mask.shape[2] == 4:
            colour, alpha = mask[:, :, :3], mask[:, :, 3]
            if colour.min() == colour.max() and alpha.min() != alpha.max():
                mask = alpha
            else:
                mask = colour.max(axis=2)
        else:
            mask = mask.max(axis=2)

    # np.multiply with a float32 dtype converts and scales in one pass.
    if mask.dtype == np.uint8:
        scale = 1.0 if mask.max() <= 1 else 1.0 / 255.0
        out = np.multiply(mask, np.float32(scale), dtype=np.float32)
    elif mask.dtype == np.uint16:
        out = np.multiply(mask, np.float32(1.0 / 65535.0), dtype=np.float32)
    elif mask.dtype == np.bool_:
        out = mask.astype(np.float32)
    else:
        out = np.clip(mask.astype(np.float32), 0.0, 1.0)
    if size is not None and tuple(out.shape[:2]) != tuple(size):
        out = cv2.resize(out, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return out
