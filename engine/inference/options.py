"""The choices of a ``predict`` run, as values: what is written, and how the images get there.

:class:`MaskOptions` is what :func:`engine.inference.predict.write_masks` needs (the files and
the pace of the loop); :class:`PredictOptions` adds what loading the model and finding the
inputs need, for :func:`engine.inference.predict.predict_images` and the video path of the CLI.
Both are frozen: one run's choices do not change under it. This module imports nothing heavy,
so the CLI can build them before it loads the data stack.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, TypeVar

__all__ = ["InferenceOptions", "MaskOptions", "PredictOptions", "with_keywords"]

_Options = TypeVar("_Options")


def with_keywords(options: _Options, keywords: Dict[str, Any]) -> _Options:
    """``options`` with the fields named in ``keywords`` replaced.

    Lets a function take its choices as one object or, as it did before, one keyword at a
    time; a keyword that names no field is a ``TypeError``, as it would be for a signature.
    """
    return dataclasses.replace(options, **keywords) if keywords else options


@dataclass(frozen=True)
class MaskOptions:
    """How :func:`~engine.inference.predict.write_masks` writes a folder of masks.

    Args:
        overlay: also write the mask tinted on each image to ``overlay/<name>.jpg`` (a folder that
            must exist).
        threshold: binary 0/255 masks at this probability instead of 8-bit maps.
        batch_size: images per forward pass.
        num_workers: decoding processes (0: in this process).
        writer_threads: encoding threads (None: :func:`~engine.inference.writer.default_writer_threads`).
        progress: show a progress bar.
    """

    overlay: bool = False
    threshold: Optional[float] = None
    batch_size: int = 8
    num_workers: int = 0
    writer_threads: Optional[int] = None
    progress: bool = True


@dataclass(frozen=True)
class InferenceOptions:
    """How a trained model runs on images: the choices ``predict`` and ``evaluate`` share.

    Args:
        tta: average over horizontal flips.
        tta_scales: input scales to average over.
        batch_size: images (or video frames) per forward pass.
        num_workers: DataLoader workers (None: :func:`~engine.inference.predictor.default_num_workers`
            for the device).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        img_size: network input size; None uses the checkpoint's training size (or 384).
        precision: autocast policy (see :func:`engine.runtime.autocast_dtype`).
        progress: show a progress bar.
    """

    tta: bool = False
    tta_scales: Sequence[float] = (1.0,)
    batch_size: int = 8
    num_workers: Optional[int] = None
    device: str = "auto"
    img_size: Optional[Any] = None
    precision: str = "auto"
    progress: bool = True


@dataclass(frozen=True)
class PredictOptions(InferenceOptions):
    """The choices of ``predict``: the files written, besides how the model runs (:class:`InferenceOptions`).

    Args:
        overlay: also write the mask tinted on the image.
        threshold: write binary 0/255 masks (``prob >= threshold``) instead of probability maps.
        recursive: also take images in sub-folders of folder inputs.

    Raises:
        ValueError: a threshold outside [0, 1].
    """

    overlay: bool = False
    threshold: Optional[float] = None
    recursive: bool = False

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"--threshold {self.threshold}: use a probability between 0 and 1 (e.g. 0.5).")

    def mask_options(self, num_workers: int) -> MaskOptions:
        """The part :func:`~engine.inference.predict.write_masks` needs, with the worker count
        resolved for the device (``num_workers`` is used where this run left it None)."""
        workers = num_workers if self.num_workers is None else int(self.num_workers)
        return MaskOptions(overlay=self.overlay, threshold=self.threshold, batch_size=self.batch_size,
                           num_workers=workers, progress=self.progress)
