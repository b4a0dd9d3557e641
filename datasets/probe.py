"""Read image sizes and check completeness from file headers, without decoding.

Validation has to look at every file of a dataset before training starts, so
it reads headers instead of pixels: JPEG, PNG and BMP (the formats COD
datasets ship in) give their size in the first few hundred bytes and their
completeness from the last few bytes, which takes microseconds per file. A
full decode would cost ~10 ms per 800 px JPEG and, worse, would not catch the
commonest damage: ``cv2.imread`` returns a half-grey image from a truncated
JPEG with only a warning on stderr. Other formats (TIFF, or bytes that match
no known signature) fall back to a full ``cv2.imdecode``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Tuple

import cv2
import numpy as np

from ._types import PathLike

__all__ = ["ImageProbe", "probe_image", "decode_check"]


_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC)
# share the range but are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Markers without a length field.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


@dataclass(frozen=True)
class ImageProbe:
    """What the header of an image file says.

    Attributes:
        path: The file.
        format: ``"jpeg"``, ``"png"``, ``"bmp"`` or ``"other"``.
        width: Width in pixels, ``None`` if unreadable.
        height: Height in pixels, ``None`` if unreadable.
        problem: ``None`` if the file looks sound, else ``"unreadable"`` or
            ``"truncated"``.
        detail: Human-readable reason when ``problem`` is set.
    """

    path: Path
    format: str
    width: Optional[int] = None
    height: Optional[int] = None
    problem: Optional[str] = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the file has a readable header and is complete."""
        return self.problem is None

    @property
    def size(self) -> Optional[Tuple[int, int]]:
        """``(height, width)``, or ``None`` if unknown."""
        if self.width is None or self.height is None:
            return None
        return self.height, self.width


class _Truncated(Exception):
    pass


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Truncated()
    return data


def _probe_jpeg(path: Path, f: BinaryIO, file_size: int) -> ImageProbe:
    # Walk the marker segments by their lengths (skipping EXIF blocks, which
    # may hold a thumbnail with its own markers) up to the first scan.
    f.seek(2)
    width = height = None
    sos_offset = None
    try:
        while sos_offset is None:
            byte = _read_exact(f, 1)
            if byte != b"\xff":
                return ImageProbe(path, "jpeg", problem="unreadable",
                                  detail=f"JPEG marker expected at byte {f.tell() - 1}")
            marker = _read_exact(f, 1)[0]
            while marker == 0xFF:  # fill bytes before a marker
                marker = _read_exact(f, 1)[0]
            if marker in _JPEG_STANDALONE:
                continue
            if marker == 0xD9:
                break
            (length,) = struct.unpack(">H", _read_exact(f, 2))
            if marker in _JPEG_SOF:
                _precision, height, width = struct.unpack(">BHH", _read_exact(f, 5))
                f.seek(length - 7, os.SEEK_CUR)
            elif marker == 0xDA:
                sos_offset = f.tell() + length - 2
            else:
                f.seek(length - 2, os.SEEK_CUR)
    except _Truncated:
        return ImageProbe(path, "jpeg", width, height, "truncated",
                          "JPEG ends inside its header")
    if width is None or height is None or sos_offset is None:
        return ImageProbe(path, "jpeg", width, height, "unreadable",
                          "JPEG has no frame header or no image data")
    if sos_offset > file_size:
        return ImageProbe(path, "jpeg", width, height, "truncated",
                          "JPEG ends inside its header")

    # Complete JPEGs end with the EOI marker. Look at the tail first (one small
    # read); files with bytes appended after EOI (some cameras do) need a scan
    # of the image data, where a 0xFF data byte is always followed by 0x00, so
    # FFD9 can only be the real end marker.
    f.seek(max(sos_offset, file_size - 64))
    tail = f.read().rstrip(b"\x00\r\n ")
    if tail.endswith(_JPEG_EOI):
        complete = True
    else:
        f.seek(sos_offset)
        complete = f.read().find(_JPEG_EOI) != -1
    if not complete:
        return ImageProbe(path, "jpeg", width, height, "truncated",
                          "JPEG has no end marker (FFD9): the file was cut short")
    if width == 0 or height == 0:
        # Height 0 means the size is given later in a DNL segment: decode.
        return decode_check(path, "jpeg")
    return ImageProbe(path, "jpeg", width, height)


def _probe_png(path: Path, f: BinaryIO, file_size: int) -> ImageProbe:
    try:
        f.seek(8)
        length, ctype = struct.unpack(">I4s", _read_exact(f, 8))
        if ctype != b"IHDR" or length < 8:
            return ImageProbe(path, "png", problem="unreadable", detail="PNG has no IHDR header")
        width, height = struct.unpack(">II", _read_exact(f, 8))
    except _Truncated:
        return ImageProbe(path, "png", problem="truncated", detail="PNG ends inside its header")

    f.seek(max(0, file_size - len(_PNG_IEND)))
    if f.read() != _PNG_IEND:
        # Data appended after IEND is legal: walk the chunks by their lengths.
        pos, seen_iend, seen_idat = 8, False, False
        while pos + 8 <= file_size:
            f.seek(pos)
            length, ctype = struct.unpack(">I4s", f.read(8))
            pos += 12 + length
            if pos > file_size:
                break
            seen_idat |= ctype == b"IDAT"
            if ctype == b"IEND":
                seen_iend = True
                break
        if not (seen_iend and seen_idat):
            return ImageProbe(path, "png", width, height, "truncated",
                              "PNG has no IEND chunk: the file was cut short")
    return ImageProbe(path, "png", width, height)


def _probe_bmp(path: Path, f: BinaryIO, file_size: int) -> ImageProbe:
    try:
        f.seek(2)
        (declared_size,) = struct.unpack("<I", _read_exact(f, 4))
        f.seek(14)
        (dib_size,) = struct.unpack("<I", _read_exact(f, 4))
        if dib_size == 12:  # OS/2 BITMAPCOREHEADER
            width, height = struct.unpack("<HH", _read_exact(f, 4))
        else:
            width, height = struct.unpack("<ii", _read_exact(f, 8))
    except _Truncated:
        return ImageProbe(path, "bmp", problem="truncated", detail="BMP ends inside its header")
    width, height = abs(width), abs(height)  # negative height = top-down rows
    # Some writers leave the size field 0; only a declared size can be checked.
    if declared_size and file_size < declared_size:
        return ImageProbe(path, "bmp", width, height, "truncated",
                          f"BMP is {file_size} bytes, its header says {declared_size}")
    return ImageProbe(path, "bmp", width, height)


def decode_check(path: PathLike, fmt: str = "other") -> ImageProbe:
    """Probe a file by decoding it fully with OpenCV.

    Args:
        path: Image file.
        fmt: Format name to record in the result.

    Returns:
        The probe; ``problem="unreadable"`` if OpenCV cannot decode the file.
    """
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        return ImageProbe(path, fmt, problem="unreadable", detail=f"cannot read file: {exc}")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        return ImageProbe(path, fmt, problem="unreadable",
                          detail="not a valid image (OpenCV cannot decode it)")
    return ImageProbe(path, fmt, int(image.shape[1]), int(image.shape[0]))


def probe_image(path: PathLike) -> ImageProbe:
    """Read the size of an image file and check it is complete.

    The format is taken from the file's first bytes, not its extension (a PNG
    saved as ``.jpg`` is probed as PNG).

    Args:
        path: Image file.

    Returns:
        The probe. ``problem`` is ``"unreadable"`` for missing, empty or
        undecodable files and ``"truncated"`` for files cut short.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            if file_size == 0:
                return ImageProbe(path, "other", problem="unreadable", detail="file is empty (0 bytes)")
            magic = f.read(8)
            if magic.startswith(_JPEG_SOI):
                return _probe_jpeg(path, f, file_size)
            if magic == _PNG_SIGNATURE:
                return _probe_png(path, f, file_size)
            if magic.startswith(b"BM"):
                return _probe_bmp(path, f, file_size)
    except OSError as exc:
        return ImageProbe(path, "other", problem="unreadable", detail=f"cannot read file: {exc}")
    return decode_check(path)
