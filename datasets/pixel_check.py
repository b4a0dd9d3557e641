"""Find damage inside the compressed pixel data, which file headers cannot show.

A JPEG or PNG whose header and end marker are intact can still hold damaged
data. PNG decoders fail on it (libpng's zlib checks), so OpenCV returns
``None``; libjpeg instead *warns* ("Corrupt JPEG data: bad Huffman code",
"Premature end of JPEG file") on stderr and returns a garbled image, which
would be trained on without notice. So each file is decoded with its
decoder's messages captured, and a JPEG that draws a damage warning counts
as unreadable.

Decoder messages go to file descriptor 2, shared by every thread of a
process, so files are decoded one at a time per process: in worker processes
for large sets, in this process for small ones. JPEGs are decoded at 1/8
scale (``IMREAD_REDUCED_GRAYSCALE_8``): every entropy-coded bit is still read,
which is where damage shows, while the inverse DCT and colour conversion,
most of a full decode, are skipped.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .decode_cache import DecodeCache

__all__ = ["JPEG_DAMAGE_WARNINGS", "find_damaged", "check_decodes"]

#: libjpeg warnings that mean the entropy-coded data is damaged (the image decodes garbled).
JPEG_DAMAGE_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file")
_JPEG_SOI = b"\xff\xd8"
# Below this many files, starting worker processes costs more than it saves.
_MIN_FILES_FOR_PROCESSES = 200
_CHUNK = 32

# Per process: the file that receives fd 2 while decoding (set up on first use).
_capture: Optional[BinaryIO] = None


def _capture_file() -> BinaryIO:
    global _capture
    if _capture is None:
        _capture = tempfile.TemporaryFile()
    return _capture


def _decode_one(path: str, capture: BinaryIO) -> Optional[str]:
    """Decode ``path`` fully; return why it is damaged, or None when it is sound."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    is_jpeg = data[:2].tobytes() == _JPEG_SOI
    flag = cv2.IMREAD_REDUCED_GRAYSCALE_8 if is_jpeg else cv2.IMREAD_UNCHANGED
    sys.stderr.flush()
    saved = os.dup(2)
    start = capture.seek(0, os.SEEK_END)
    os.dup2(capture.fileno(), 2)
    try:
        image = cv2.imdecode(data, flag | cv2.IMREAD_IGNORE_ORIENTATION)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    capture.seek(start)
    messages = capture.read().decode("utf-8", "replace").strip()
    if image is None or image.size == 0:
        detail = f": {messages.splitlines()[-1]}" if messages else ""
        return f"pixel data cannot be decoded (damaged or unsupported){detail}"
    if is_jpeg:
        damage = [line for line in messages.splitlines() if line.startswith(JPEG_DAMAGE_WARNINGS)]
        if damage:
            return f"damaged JPEG data, the image decodes garbled: {damage[0]}"
    return None


def _worker_init() -> None:
    cv2.setNumThreads(0)  # one process per core already


def _decode_chunk(paths: Sequence[str]) -> List[Tuple[str, Optional[str]]]:
    capture = _capture_file()
    return [(p, _decode_one(p, capture)) for p in paths]


def check_decodes(paths: Sequence[Path]) -> Dict[Path, str]:
    """Decode ``paths`` in this process, one at a time.

    Args:
        paths: Image files.

    Returns:
        ``{path: reason}`` for the files that are damaged.
    """
    capture = _capture_file()
    found = {}
    for path in paths:
        reason = _decode_one(os.fspath(path), capture)
        if reason is not None:
            found[Path(path)] = reason
    return found


def find_damaged(
    paths: Sequence[Path],
    workers: Optional[int] = None,
    progress=None,
    cache: Optional[DecodeCache] = None,
) -> Dict[Path, str]:
    """Decode every file and report those whose pixel data is damaged.

    Args:
        paths: Image files (whose headers were already found sound).
        workers: Worker processes; None picks one per core (up to 8) for
            large sets and none for small ones.
        progress: Optional ``update(n)`` callable (a tqdm bar) told how many
            files were checked.
        cache: Files it records as sound (unchanged since they last decoded
            cleanly) are not decoded again; the files found sound now are
            recorded and the cache saved. None decodes every file.

    Returns:
        ``{path: reason}`` for the damaged files.
    """
    paths = [Path(p) for p in paths]
    if cache is None:
        return _decode_all(paths, workers, progress)
    started = time.time()
    known, todo = cache.split(paths)
    if known and progress is not None:
        progress(len(known))
    found = _decode_all(todo, workers, progress)
    cache.record_sound([p for p in todo if p not in found], started)
    cache.save()
    return found


def _decode_all(paths: List[Path], workers: Optional[int], progress) -> Dict[Path, str]:
    if workers is None:
        workers = 0 if len(paths) < _MIN_FILES_FOR_PROCESSES else min(8, os.cpu_count() or 1)
    if workers <= 1:
        found = {}
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start:start + _CHUNK]
            found.update(check_decodes(chunk))
            if progress is not None:
                progress(len(chunk))
        return found
    chunks = [[os.fspath(p) for p in paths[i:i + _CHUNK]] for i in range(0, len(paths), _CHUNK)]
    found = {}
    done = 0
    # spawn: the caller may hold CUDA or OpenMP threads that a forked child must not inherit.
    # A spawned child re-imports the __main__ script before its first file, which is why the
    # entry script (train_ultimate.py) imports no heavy library at module level
    # (tests/cli/test_startup.py): with torch there, each worker spent seconds before decoding.
    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            for results in pool.map(_decode_chunk, chunks):
                for path, reason in results:
                    if reason is not None:
                        found[Path(path)] = reason
                done += len(results)
                if progress is not None:
                    progress(len(results))
    except (BrokenProcessPool, OSError):
        # Workers could not start (a script run from stdin, a sandbox without process
        # creation): finish in this process rather than fail the check.
        found.update(_decode_all(paths[done:], 0, progress))
    return found
