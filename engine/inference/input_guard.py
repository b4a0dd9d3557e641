"""Refuse a prediction whose outputs would land on its inputs.

``predict --input photos --output photos`` on a folder of PNGs would replace every photo by its
mask (``x.png`` -> ``x.png``) and report success. The outputs of a run are known before the model
loads (each input's output stem, the ``overlay/`` folder, the ``_mask.mp4`` names), so they are
compared with the inputs first, and a run that would write over one is refused by name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Sequence

from datasets import display_path

__all__ = ["OutputOverlapError", "check_outputs_spare_inputs"]


class OutputOverlapError(ValueError):
    """An output of ``predict`` would overwrite an input, or be mixed into an input folder."""


def _key(path: Path) -> str:
    # realpath: "photos/../photos/x.png" and a symlink to it are the same file; normcase for
    # file systems that ignore case (macOS, Windows), where X.PNG and x.png are one file.
    return os.path.normcase(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    path_key, folder_key = _key(path), _key(folder)
    return path_key == folder_key or path_key.startswith(folder_key.rstrip(os.sep) + os.sep)


def _suggestion(output: Path) -> str:
    return f"--output {display_path(output.absolute().parent / (output.absolute().name + '_masks'))}"


def check_outputs_spare_inputs(inputs: Sequence[os.PathLike], input_files: Sequence[Path],
                               outputs: Iterable[Path], output: Path, recursive: bool) -> None:
    """Raise :class:`OutputOverlapError` when a run would write over what it reads.

    Args:
        inputs: the ``--input`` values as given (files, folders, patterns).
        input_files: the files the run reads (images or videos).
        outputs: every file the run would write.
        output: the ``--output`` folder.
        recursive: whether folder inputs include their sub-folders.

    Raises:
        OutputOverlapError: an output path is an input file; ``output`` is an input folder; or,
            with ``recursive``, ``output`` lies inside an input folder (a later run would take the
            masks for photos). The message names the file or folder and the option to pass.
    """
    output = Path(output)
    folders = [Path(item) for item in inputs if Path(os.path.expanduser(item)).is_dir()]
    for folder in folders:
        if _key(output) == _key(folder):
            raise OutputOverlapError(
                f"--output {display_path(output)} is the input folder {display_path(folder)}: the masks would "
                f"be written among the photos (and replace any photo with a mask's name). Pass another folder, "
                f"e.g. {_suggestion(output)}.")
        if recursive and _inside(output, folder):
            raise OutputOverlapError(
                f"--output {display_path(output)} lies inside the input folder {display_path(folder)}, which "
                f"--recursive reads whole: the masks would mix with the photos. Pass a folder outside it, "
                f"e.g. {_suggestion(folder)}.")
    readers = {_key(path): path for path in input_files}
    clashes: List[str] = [f"{display_path(target)} is the input {display_path(readers[_key(target)])}"
                          for target in outputs if _key(target) in readers]
    if clashes:
        shown = "\n  ".join(clashes[:10]) + (f"\n  ... and {len(clashes) - 10} more" if len(clashes) > 10 else "")
        raise OutputOverlapError(
            f"{len(clashes)} output file(s) would overwrite an input:\n  {shown}\n"
            f"Pass an --output folder that holds no input, e.g. {_suggestion(output)}.")
