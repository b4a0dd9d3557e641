"""List the image files of one folder, classifying names that are no readable file.

Every dataset layout is made of folders of images (and of masks); this module
lists them. A name with an image extension that is not a readable file
(a broken or looping symbolic link, a folder called ``x.jpg``) is returned as
an :class:`UnusableEntry` rather than dropped, so that validation can name it.
Folder names are looked up case-insensitively (:func:`find_child_dir`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ._types import PathLike

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetLayoutError",
    "UnusableEntry",
    "is_image_file",
    "scan_image_folder",
    "list_image_files",
    "find_child_dir",
    "list_subdirs",
]


IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# Defined here, with the lowest-level code that raises it (an unreadable folder);
# datasets.layouts re-exports it with the discovery functions.
class DatasetLayoutError(ValueError):
    """Raised when a dataset path does not hold any understood layout."""


@dataclass(frozen=True)
class UnusableEntry:
    """A name in an image or mask folder that looks like an image but is no readable file.

    Attributes:
        path: The entry.
        reason: What it is instead (broken link, link loop, folder).
    """

    path: Path
    reason: str


def is_image_file(path: PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _entry_kind(entry: os.DirEntry) -> Tuple[str, str]:
    """``("file" | "dir" | "unusable" | "other", reason)`` for a directory entry, links followed.

    A link loop makes ``is_file()`` raise ``ELOOP``; it is classified rather
    than let through, so one bad entry cannot abort a whole scan.
    """
    try:
        if entry.is_file():
            return "file", ""
        if entry.is_dir():
            return "dir", ""
    except OSError as exc:
        return "unusable", f"symbolic link loop ({exc.strerror})"
    if entry.is_symlink():
        try:
            target = os.readlink(entry.path)
        except OSError:
            target = "?"
        return "unusable", f"broken symbolic link (its target {target} does not exist)"
    return "other", ""


def _is_dir(entry: os.DirEntry) -> bool:
    return _entry_kind(entry)[0] == "dir"


def scan_image_folder(folder: PathLike) -> Tuple[List[Path], List[UnusableEntry]]:
    """Image files directly inside ``folder``, and the image names that are no readable file.

    Hidden files (``.DS_Store``, macOS ``._x.jpg`` resource forks) are skipped.

    Args:
        folder: Folder to list.

    Returns:
        ``(files, unusable)``: image paths sorted by name, and the entries
        with an image extension that are broken or looping symbolic links
        or folders (sorted by name).

    Raises:
        DatasetLayoutError: the folder cannot be listed (no permission).
    """
    files: List[Path] = []
    unusable: List[UnusableEntry] = []
    try:
        listing = os.scandir(folder)
    except PermissionError as exc:
        raise DatasetLayoutError(
            f"Cannot read the folder {folder}: permission denied. Make it readable (e.g. chmod -R a+rX {folder}) "
            f"or copy the data set to a folder you can read."
        ) from exc
    with listing as entries:
        for e in entries:
            if e.name.startswith(".") or not is_image_file(e.name):
                continue
            kind, reason = _entry_kind(e)
            if kind == "file":
                files.append(Path(e.path))
            elif kind == "dir":
                unusable.append(UnusableEntry(Path(e.path), "a folder, not an image file"))
            elif kind == "unusable":
                unusable.append(UnusableEntry(Path(e.path), reason))
    return sorted(files, key=lambda p: p.name), sorted(unusable, key=lambda u: u.path.name)


def list_image_files(folder: PathLike) -> List[Path]:
    """Image files directly inside ``folder``, sorted by name.

    Hidden files are skipped, and so are names that are no readable file
    (see :func:`scan_image_folder` to get those too).

    Args:
        folder: Folder to list.

    Returns:
        Sorted image paths; empty if the folder holds none.
    """
    return scan_image_folder(folder)[0]


def find_child_dir(parent: Path, names: Sequence[str]) -> Optional[Path]:
    """First sub-folder of ``parent`` whose lower-cased name is in ``names`` (by preference)."""
    try:
        with os.scandir(parent) as entries:
            dirs = {e.name.lower(): Path(e.path) for e in entries if _is_dir(e)}
    except OSError:  # missing, not a folder, no permission, link loop
        return None
    for name in names:
        if name in dirs:
            return dirs[name]
    return None


def list_subdirs(parent: Path) -> List[Path]:
    """Sub-folders of ``parent`` (links followed, hidden ones skipped), sorted by name."""
    with os.scandir(parent) as entries:
        dirs = [Path(e.path) for e in entries if not e.name.startswith(".") and _is_dir(e)]
    return sorted(dirs, key=lambda p: p.name)

