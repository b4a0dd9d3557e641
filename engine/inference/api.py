"""A trained model as a Python object: images in (paths, NumPy arrays, PIL images), maps out.

    from engine.inference import Segmenter
    seg = Segmenter("checkpoints/best.pt")            # device="auto", precision="auto"
    prob = seg.predict("photo.jpg")                    # (H, W) float32 in [0, 1]
    probs = seg.predict([frame_bgr, pil_image], color="bgr")

The preprocessing, forward pass and resizing back are those of ``predict`` and ``evaluate``
(:class:`engine.inference.predictor.Predictor`), so a map from here, quantised to 8 bits, is
the mask ``predict`` writes for the same image.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import torch

from datasets import build_eval_transform, read_image
from datasets.io import to_uint8
from engine.inference.predictor import InferenceModel, Predictor, load_inference_model, parse_tta_scales
from engine.runtime import resolve_device

__all__ = ["COLOR_ORDERS", "Segmenter", "to_rgb_array"]

#: Channel orders an array input may be in.
COLOR_ORDERS = ("rgb", "bgr")
ImageLike = Union[str, os.PathLike, np.ndarray, Any]  # Any: a PIL.Image.Image

# Float arrays may stray this far outside [0, 1] (resampling overshoot, rounding) and are
# clipped; farther out they are taken for 0-255 data, which clipping would turn white.
_FLOAT_SLACK = 1.0 / 255.0


def _check_array(image: np.ndarray) -> None:
    """Refuse arrays the uint8 conversion would silently get wrong."""
    if image.size == 0:
        raise ValueError(f"Empty image array of shape {image.shape}: an image needs at least one pixel.")
    if np.issubdtype(image.dtype, np.floating):
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -_FLOAT_SLACK or hi > 1.0 + _FLOAT_SLACK:
            raise ValueError(
                f"Float image array with values in [{lo:g}, {hi:g}]: float images must be in [0, 1]. "
                f"Divide 0-255 data by 255, or pass it as uint8 (array.astype(np.uint8))."
            )


def _pil_to_array(image: Any) -> np.ndarray:
    """A PIL image as the array its file would decode to.

    Integer modes ("I;16" for 16-bit PNGs, "I" for 32-bit ints, which older Pillow uses for
    16-bit files too) keep their values: ``convert("RGB")`` would clip them at 255 and turn
    most of the image white, while :func:`~datasets.io.read_image` scales 16-bit data to 8 bits.
    """
    if not str(image.mode).startswith("I"):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.uint16).max):
        raise ValueError(
            f"PIL image of mode {image.mode!r} with values in [{array.min()}, {array.max()}]: integer images must "
            f"be 16-bit (0-65535). Convert it to 'L' or 'RGB' yourself, with the scaling your data needs."
        )
    return array.astype(np.uint16)  # native byte order, scaled to 8 bits like a 16-bit file


def to_rgb_array(image: ImageLike, color: str = "rgb") -> np.ndarray:
    """An image as ``(H, W, 3)`` uint8 RGB.

    Args:
        image: a file path; a NumPy array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` (uint8,
            uint16 (scaled by 1/257, as 16-bit files are), bool, or float in [0, 1]); or a PIL
            image (any mode; 16-bit ones are scaled like 16-bit files).
        color: channel order of an array input, ``"rgb"`` or ``"bgr"`` (OpenCV frames are BGR);
            paths and PIL images carry their own order and ignore it.

    Raises:
        ValueError: an unknown ``color``; an empty array or one of another shape; a float
            array with values outside [0, 1] (0-255 data: divide by 255 or pass uint8).
        TypeError: an input of another type.
        datasets.ImageReadError: a path that is missing or cannot be decoded.
    """
    if color not in COLOR_ORDERS:
        raise ValueError(f"color={color!r}: use 'rgb' or 'bgr' (the channel order of your array).")
    if isinstance(image, (str, os.PathLike)):
        return read_image(Path(image))
    if isinstance(image, np.ndarray):
        _check_array(image)
        array = to_uint8(image)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"Expected an (H, W), (H, W, 3) or (H, W, 4) image array; got shape {image.shape}.")
        array = array[:, :, :3]  # alpha dropped, as read_image does for files
        if color == "bgr":
            array = array[:, :, ::-1]
        return np.ascontiguousarray(array)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image.Image, without importing PIL
        return to_rgb_array(_pil_to_array(image), "rgb")
    raise TypeError(
        f"Cannot read an image from {type(image).__name__}: pass a file path, a NumPy array or a PIL image."
    )


class Segmenter:
    """A trained CamoXpert checkpoint ready to segment images.

    The checkpoint is loaded weights-only, the model rebuilt from the config it records, with
    its EMA weights when it has them. A pretrained folder or a Hugging Face Hub id loads the same
    way (``Segmenter.from_pretrained("user/name")`` reads better for those).

    Args:
        checkpoint: ``best.pt``/``last.pt`` written by ``train``, a folder written by
            ``save_pretrained``/``export --format hf``, or a Hub id ``user/name``.
        device: ``auto`` (first GPU, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``auto`` (bf16/fp16 autocast on GPU, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``.
        img_size: network input size (N or HxW, multiples of 32); None: the checkpoint's
            training size (else 384).
        batch_size: images per forward pass for list inputs.
        tta: also average over the horizontally flipped image.
        tta_scales: input scales to average over (positive numbers).
        cuda_graphs: replay CUDA graphs for recurring shapes (None: on for CUDA devices).

    Raises:
        engine.checkpoint.CheckpointError: the checkpoint is missing, unsafe or not CamoXpert's.
        ValueError: an invalid device, precision, image size or TTA scale.
    """

    def __init__(
        self,
        checkpoint: Union[str, os.PathLike],
        device: str = "auto",
        precision: str = "auto",
        img_size: Optional[Any] = None,
        batch_size: int = 8,
        tta: bool = False,
        tta_scales: Sequence[float] = (1.0,),
        cuda_graphs: Optional[bool] = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: use 1 or more.")
        scales = parse_tta_scales(tta_scales)  # the CLI's check and message (a scale of 0 cannot be run)
        self.device = resolve_device(device)
        self.loaded: InferenceModel = load_inference_model(checkpoint, self.device, img_size)
        self.predictor = Predictor(self.loaded.model, self.device, hflip=tta, scales=scales,
                                   precision=precision, cuda_graphs=cuda_graphs)
        self.batch_size = int(batch_size)
        self.transform = build_eval_transform(self.loaded.img_size)

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, os.PathLike], **kwargs: Any) -> "Segmenter":
        """A Segmenter for a pretrained folder, a Hub id (``user/name``) or a checkpoint file.

        Args:
            name_or_path: the model.
            **kwargs: the other arguments of :class:`Segmenter` (device, precision, ...).
        """
        return cls(name_or_path, **kwargs)

    def save_pretrained(self, out_dir: Union[str, os.PathLike], license: str = "mit") -> Path:
        """Write this model as a pretrained folder (model.safetensors, config.json, README.md).

        The card carries the model and its input size; scores and the training record are only
        known to the checkpoint: ``export --format hf --checkpoint best.pt`` writes those too.
        """
        from engine.sharing import save_pretrained

        h, w = self.loaded.img_size
        state = {
            "model_config": self.model.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "weights": "ema" if self.loaded.used_ema else "model",
            "epoch": self.loaded.epoch,
            "config": {"data": {"img_size": h if h == w else f"{h}x{w}"}},
        }
        return save_pretrained(state, out_dir, license=license)

    @property
    def model(self) -> torch.nn.Module:
        """The network (eval mode, on :attr:`device`)."""
        return self.loaded.model

    @property
    def img_size(self) -> tuple:
        """``(height, width)`` the network is fed."""
        return self.loaded.img_size

    def _prepare(self, rgb: np.ndarray) -> torch.Tensor:
        return self.transform(image=rgb)["image"]  # (3, h, w) float32, ImageNet-normalised

    def _predict_batch(self, images: List[np.ndarray]) -> List[np.ndarray]:
        batch = torch.stack([self._prepare(im) for im in images])  # (B, 3, h, w)
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        probs = self.predictor.predict_sizes(batch, [im.shape[:2] for im in images])
        return [p.cpu().numpy() for p in probs]

    def predict(self, images: Union[ImageLike, Sequence[ImageLike]], color: str = "rgb"):
        """Probability maps at each input's own size.

        Args:
            images: one image (path, NumPy array or PIL image) or a list of them; lists are
                run in batches of :attr:`batch_size`.
            color: channel order of NumPy array inputs: ``"rgb"`` (default) or ``"bgr"``.

        Returns:
            For one image, an ``(H, W)`` float32 array in [0, 1] (the probability that each pixel
            belongs to the camouflaged object); for a list, a list of them in input order.
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        out: List[np.ndarray] = []
        for start in range(0, len(items), self.batch_size):
            chunk = [to_rgb_array(im, color) for im in items[start:start + self.batch_size]]
            out.extend(self._predict_batch(chunk))
        return out[0] if single else out

    __call__ = predict
