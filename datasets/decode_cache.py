"""Remember which image files already decoded cleanly, so a later run skips decoding them.

The full pixel check (:func:`datasets.pixel_check.find_damaged`) decodes every file; on a large
set that is seconds to minutes of every start-up. A file is skipped when its resolved path, size,
modification and change times and inode all match the entry recorded when it last decoded
cleanly: rewriting a file changes its times, replacing it changes its inode.

Only sound files are recorded, so a damaged file is decoded, and reported, on every run. Like
git's index, a file modified within :data:`RACY_S` seconds of the check is not recorded: file
system clocks are coarse (milliseconds), and a file rewritten at the same size in the same tick
would otherwise look unchanged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .files import atomic_write_text

__all__ = ["DecodeCache", "RACY_S"]

#: Files modified this recently (seconds) are checked but not recorded.
RACY_S = 2.0
_VERSION = 1
# Past this many entries the file is rewritten with only the current run's files, which keeps
# the cache from growing without bound over many data sets.
_MAX_ENTRIES = 1_000_000

_Key = List[int]


def _key(st: os.stat_result) -> _Key:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class DecodeCache:
    """Sound-decode records kept in one JSON file.

    Args:
        path: The JSON file (created on :meth:`save`); None keeps nothing (every file is decoded).

    Example::

        cache = DecodeCache.default()
        damaged = find_damaged(paths, cache=cache)   # skips files recorded as sound, saves
    """

    def __init__(self, path: Optional[Path]) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: Dict[str, _Key] = {}
        self._seen: Dict[str, _Key] = {}
        self._dirty = False
        if self.path is not None:
            self._entries = self._load(self.path)

    @classmethod
    def default(cls) -> "DecodeCache":
        """The cache in this machine's cache folder (``$CAMOXPERT_CACHE`` or ``~/.cache/camoxpert``).

        ``CAMOXPERT_DECODE_CACHE=0`` turns it off (every file is decoded on every run).
        """
        if os.environ.get("CAMOXPERT_DECODE_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
            return cls(None)
        from .synthetic_cache import default_cache_dir

        return cls(default_cache_dir() / "decode_check.json")

    @staticmethod
    def _load(path: Path) -> Dict[str, _Key]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}  # missing or damaged: start empty (it is only a cache)
        if not isinstance(data, dict) or data.get("v") != _VERSION or not isinstance(data.get("files"), dict):
            return {}
        return data["files"]

    def split(self, paths: Sequence[Path]) -> Tuple[List[Path], List[Path]]:
        """Split ``paths`` into ``(known_sound, to_decode)``.

        Files that cannot be stat'ed go to ``to_decode`` (the decoder reports why).
        """
        known, todo = [], []
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                todo.append(p)
                continue
            name = os.path.realpath(p)
            key = _key(st)
            self._seen[name] = key
            (known if self._entries.get(name) == key else todo).append(p)
        return known, todo

    def record_sound(self, paths: Iterable[Path], checked_at: float) -> None:
        """Record ``paths`` (stat'ed by :meth:`split`) as decoding cleanly, racy ones excepted.

        Args:
            paths: Files the check found sound.
            checked_at: ``time.time()`` when the check started.
        """
        if self.path is None:
            return
        limit_ns = int((checked_at - RACY_S) * 1e9)
        for p in paths:
            name = os.path.realpath(p)
            key = self._seen.get(name)
            if key is not None and key[1] < limit_ns and key[2] < limit_ns and self._entries.get(name) != key:
                self._entries[name] = key
                self._dirty = True

    def save(self) -> None:
        """Write the records (atomically; a failure to write only costs the next run time)."""
        if self.path is None or not self._dirty:
            return
        entries = self._entries
        if len(entries) > _MAX_ENTRIES:
            entries = {k: v for k, v in entries.items() if k in self._seen}
        try:
            # Readers (other ranks, other runs) see the old records or the new, never half.
            atomic_write_text(self.path, json.dumps({"v": _VERSION, "saved": time.time(), "files": entries}))
            self._dirty = False
        except OSError:
            pass  # a read-only or full cache folder: the check still ran, it is just not remembered
