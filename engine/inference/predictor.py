"""Inference shared by ``evaluate`` and ``predict``: model loading, TTA forward, resizing back.

One code path turns a batch of normalised images into probability maps (optionally averaged
over horizontal flips and scales) and then into maps at each image's own size, so a mask from
``predict`` and a prediction scored by ``evaluate`` are computed the same way.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from engine.checkpoint import load_checkpoint, model_from_checkpoint
from engine.files import PathLike
from engine.inference.graphed import GraphedForward
from engine.inference.postprocess import masks_at_sizes, resize_probability
from engine.runtime import autocast_context, autocast_dtype
from engine.sharing import ModelSource, load_pretrained, resolve_model_source
from models.sdpa_probe import require_usable_attention

__all__ = [
    "DEFAULT_IMG_SIZE",
    "SIZE_MULTIPLE",
    "GuardedDataset",
    "InferenceModel",
    "Predictor",
    "checkpoint_img_size",
    "collate_guarded",
    "default_num_workers",
    "load_inference_model",
    "parse_img_size",
    "parse_tta_scales",
]

#: Image size used when neither ``--img-size`` nor the checkpoint's run config gives one.
DEFAULT_IMG_SIZE = 384
#: The backbone downsamples by 32, so network inputs must be multiples of it.
SIZE_MULTIPLE = 32
SizeLike = Union[int, str, Sequence[int]]


def parse_img_size(value: SizeLike) -> Tuple[int, int]:
    """``384``, ``"384"``, ``"384x512"`` or ``(384, 512)`` -> ``(height, width)``.

    Raises:
        ValueError: not positive multiples of 32 (the message names the nearest valid sizes).
    """
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            hw = [int(p) for p in parts if p.strip()]
        except ValueError as exc:
            raise ValueError(f"Image size {value!r} is not a number or HxW (e.g. 384 or 384x512).") from exc
    elif isinstance(value, (int, np.integer)):
        hw = [int(value)]
    else:
        hw = [int(v) for v in value]
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2:
        raise ValueError(f"Image size {value!r}: give one number or height x width.")
    for side in hw:
        if side < SIZE_MULTIPLE or side % SIZE_MULTIPLE:
            lo = max(SIZE_MULTIPLE, side // SIZE_MULTIPLE * SIZE_MULTIPLE)
            raise ValueError(
                f"Image size {value!r}: each side must be a positive multiple of {SIZE_MULTIPLE} "
                f"(the backbone's stride). Consider {lo} or {lo + SIZE_MULTIPLE}."
            )
    return hw[0], hw[1]


def checkpoint_img_size(ckpt: Mapping[str, Any], default: int = DEFAULT_IMG_SIZE) -> Tuple[int, int]:
    """The training image size a checkpoint records (``config["data"]["img_size"]``), else ``default``."""
    config = ckpt.get("config") or {}
    data = config.get("data") if isinstance(config, Mapping) else None
    size = data.get("img_size") if isinstance(data, Mapping) else None
    return parse_img_size(size if size is not None else default)


def parse_tta_scales(value: Union[str, Sequence[float], None]) -> Tuple[float, ...]:
    """``"0.75,1,1.25"`` -> ``(0.75, 1.0, 1.25)``; None/empty -> ``(1.0,)``.

    Raises:
        ValueError: a scale that is not a positive, finite number.
    """
    if value is None or value == "":
        return (1.0,)
    items = value.split(",") if isinstance(value, str) else list(value)
    scales = []
    for item in items:
        try:
            s = float(item)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"TTA scale {item!r} is not a number (e.g. --tta-scales 0.75,1,1.25).") from exc
        if not 0 < s < math.inf:
            raise ValueError(f"TTA scale {s} must be a positive, finite number.")
        scales.append(s)
    return tuple(dict.fromkeys(scales)) or (1.0,)


def default_num_workers(device: Optional[torch.device] = None) -> int:
    """Data-loading workers, leaving cores for the main process: up to 4, or up to 8 for a GPU.

    A worker decodes and resizes an 800-px JPEG in about 3 ms (uint8 out, normalised on the
    device), so 8 of them feed well over 1,000 images a second while the other cores encode
    the masks (:func:`engine.inference.writer.default_writer_threads`).
    """
    cap = 8 if device is not None and torch.device(device).type == "cuda" else 4
    return max(0, min(cap, (os.cpu_count() or 1) - 2))


@dataclass
class InferenceModel:
    """A model ready for inference and what the checkpoint says about it.

    Attributes:
        model: the network in eval mode on its device.
        img_size: ``(height, width)`` the network is fed.
        checkpoint: path of the checkpoint file, or of the pretrained folder (for a Hub id, its
            snapshot in the Hugging Face cache).
        used_ema: whether EMA weights were loaded.
        epoch: the checkpoint's epoch, when recorded.
        run_config: the resolved run config the checkpoint carries (``{}`` when absent).
    """

    model: torch.nn.Module
    img_size: Tuple[int, int]
    checkpoint: Path
    used_ema: bool
    epoch: Optional[int] = None
    run_config: Dict[str, Any] = field(default_factory=dict)


def load_inference_model(
    checkpoint: PathLike,
    device: torch.device,
    img_size: Optional[SizeLike] = None,
    prefer_ema: bool = True,
) -> InferenceModel:
    """Load a checkpoint (weights only) or a pretrained model and rebuild it for inference.

    The one loader of every inference path (predict, evaluate, export, the Python API and the
    attention check), so each of them takes the same three kinds of source
    (:func:`engine.sharing.resolve_model_source`).

    Args:
        checkpoint: a ``last.pt``/``best.pt`` written by ``train``, a folder written by
            ``save_pretrained``/``export --format hf``, or a Hugging Face Hub id (``user/name``).
        device: where to run.
        img_size: network input size; None uses the checkpoint's training size (or 384).
        prefer_ema: use EMA weights when the checkpoint has them.

    Raises:
        engine.checkpoint.CheckpointError: missing, unsafe or foreign checkpoint, or a pretrained
            folder or Hub id that cannot be found or loaded (naming it and the fix).
        ValueError: an invalid image size.
    """
    source = resolve_model_source(checkpoint)
    if source.kind != "file":
        return _pretrained_inference_model(source, device, img_size)
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    size = parse_img_size(img_size) if img_size is not None else checkpoint_img_size(ckpt)
    model = model_from_checkpoint(ckpt, device=device, prefer_ema=prefer_ema, source=checkpoint)
    epoch = ckpt.get("epoch")
    return InferenceModel(
        model=model,
        img_size=size,
        checkpoint=Path(checkpoint),
        # best.pt stores its validated EMA weights as "model" and says so in "weights".
        used_ema=bool(prefer_ema and ckpt.get("ema")) or ckpt.get("weights") == "ema",
        epoch=int(epoch) if isinstance(epoch, (int, np.integer)) else None,
        run_config=dict(ckpt.get("config") or {}),
    )


def _pretrained_inference_model(source: ModelSource, device: torch.device,
                                img_size: Optional[SizeLike]) -> InferenceModel:
    """:func:`load_inference_model` for a pretrained folder or Hub snapshot."""
    loaded = load_pretrained(source.path, device, name=source.name)
    h, w = loaded.img_size
    epoch = loaded.epoch
    return InferenceModel(
        model=loaded.model,
        img_size=parse_img_size(img_size) if img_size is not None else loaded.img_size,
        checkpoint=source.path,
        used_ema=loaded.used_ema,
        epoch=int(epoch) if isinstance(epoch, int) else None,
        # What readers of a run config look for (the training size); the folder holds no more.
        run_config={"data": {"img_size": h if h == w else f"{h}x{w}"}},
    )


class Predictor:
    """Batched probability maps from a segmentation model, with optional test-time augmentation.

    Args:
        model: returns ``(B, 1, H, W)`` logits in eval mode for ``(B, 3, H, W)`` inputs.
        device: where the model lives.
        hflip: also run horizontally flipped inputs and average the probabilities.
        scales: input scales to average over (each rounded to a multiple of 32); ``(1.0,)``
            is plain single-scale inference.
        precision: ``auto`` (bf16/fp16 autocast on GPU, fp32 on CPU), ``bf16``, ``fp16``, ``fp32``.
        cuda_graphs: replay CUDA graphs for recurring input shapes (see
            :class:`engine.inference.graphed.GraphedForward`); ``None`` turns them on for CUDA
            devices. Ignored on CPU.

    Raises:
        models.sdpa_probe.AttentionBackendError: (a ValueError) the model's attention is pinned to
            an SDPA kernel that cannot run on ``device`` at this precision.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        hflip: bool = False,
        scales: Sequence[float] = (1.0,),
        precision: str = "auto",
        cuda_graphs: Optional[bool] = None,
    ) -> None:
        self.model = model.eval()
        self.device = torch.device(device)
        self.hflip = bool(hflip)
        self.scales = tuple(scales) or (1.0,)
        self.amp_dtype = autocast_dtype(self.device, precision)
        # A pinned SDPA kernel that cannot run here is a clear ValueError now, not a traceback
        # from the first batch.
        require_usable_attention(self.device, self.amp_dtype or torch.float32, model=self.model)
        on_cuda = self.device.type == "cuda"
        self._forward: Callable[[torch.Tensor], Any] = self.model
        if on_cuda and (cuda_graphs is None or cuda_graphs):
            # Fixed shapes: let cuDNN pick its fastest kernels once, during the graph warm-up.
            torch.backends.cudnn.benchmark = True
            self._forward = GraphedForward(self.model, self.amp_dtype)
        self._normalizer = None

    @property
    def normalizer(self):
        """:class:`engine.inference.preprocess.DeviceNormalizer` for uint8 batches (made on first use)."""
        if self._normalizer is None:
            # Imported here: it needs the data stack, which model-only users of Predictor do not.
            from engine.inference.preprocess import DeviceNormalizer

            self._normalizer = DeviceNormalizer(self.device)
        return self._normalizer

    def warm_up(self, batch_size: int, img_size: Tuple[int, int]) -> None:
        """Run the shapes a job will feed until they replay from CUDA graphs (no-op on CPU).

        Pays cuDNN autotuning and graph capture before the first real batch; smaller batches
        then replay the same graph (see :class:`engine.inference.graphed.GraphedForward`).
        """
        if self.device.type != "cuda":
            return
        x = torch.zeros(int(batch_size), 3, int(img_size[0]), int(img_size[1]), device=self.device)
        for _ in range(3):  # eager, capture, one replay
            self.probabilities(x)
        torch.cuda.synchronize(self.device)

    @property
    def graphs_captured(self) -> int:
        """CUDA graphs captured so far (0 when the model runs eagerly, always on CPU)."""
        return len(self._forward.graphs) if isinstance(self._forward, GraphedForward) else 0

    @property
    def num_views(self) -> int:
        """Forward passes per image (scales x flips)."""
        return len(self.scales) * (2 if self.hflip else 1)

    def _forward_probs(self, images: torch.Tensor) -> torch.Tensor:
        with autocast_context(self.device, self.amp_dtype):
            out = self._forward(images)
        if isinstance(out, (tuple, list)):  # a model left in training mode returns (logits, sides, ...)
            out = out[0]
        return torch.sigmoid(out.float())  # (B, 1, h, w)

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Probability maps at the input's size.

        Args:
            images: ``(B, 3, H, W)`` normalised images, H and W multiples of 32.

        Returns:
            ``(B, 1, H, W)`` float32 probabilities on the model's device.
        """
        images = images.to(self.device, non_blocking=True)
        h, w = images.shape[-2:]
        total = None
        for scale in self.scales:
            if scale == 1.0:
                x = images
            else:
                size = (
                    max(SIZE_MULTIPLE, int(round(h * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE),
                    max(SIZE_MULTIPLE, int(round(w * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE),
                )
                x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            views = [self._forward_probs(x)]
            if self.hflip:
                # Flip the input, then flip the prediction back so both views align pixel for pixel.
                views.append(torch.flip(self._forward_probs(torch.flip(x, dims=[-1])), dims=[-1]))
            for p in views:
                if p.shape[-2:] != (h, w):
                    p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
                total = p if total is None else total + p
        return total / self.num_views

    def predict_sizes(self, images: torch.Tensor, sizes: Sequence[Sequence[int]]) -> List[torch.Tensor]:
        """Probability maps resized to each image's own ``(height, width)``.

        Args:
            images: ``(B, 3, H, W)`` normalised network inputs.
            sizes: ``B`` target sizes (original image or ground-truth sizes).

        Returns:
            ``B`` float32 ``(h_i, w_i)`` tensors in [0, 1] on the model's device.
        """
        probs = self.probabilities(images)
        return [resize_probability(probs[i], (int(s[0]), int(s[1]))) for i, s in enumerate(sizes)]


    @torch.inference_mode()
    def masks(self, pixels: torch.Tensor, sizes: Sequence[Sequence[int]],
              threshold: Optional[float] = None) -> List[torch.Tensor]:
        """uint8 masks at each image's own size, from uint8 pixels at the network size.

        The fast path of ``predict`` and ``evaluate``: normalisation, forward pass, resizing
        and quantisation all run on the device; equal to :meth:`predict_sizes` on the
        evaluation transform's output followed by quantisation (or thresholding).

        Args:
            pixels: ``(B, h, w, 3)`` uint8 RGB (pinned for an asynchronous copy).
            sizes: ``B`` target ``(height, width)``.
            threshold: None for 8-bit probability maps, else binary 0/255 masks.

        Returns:
            ``B`` uint8 ``(H_i, W_i)`` tensors on the model's device.
        """
        return masks_at_sizes(self.probabilities(self.normalizer(pixels)), sizes, threshold)


class GuardedDataset(Dataset):
    """Wraps a dataset so a failing item becomes an error record instead of killing the loader.

    A corrupt file raised inside a DataLoader worker surfaces as a long re-raised traceback;
    here it becomes ``{"index": i, "error": "<file>: <reason>"}`` that the caller reports by
    file name.

    Args:
        base: the dataset to wrap (items are dicts with an ``index``).
        describe: ``index -> str`` naming the item's file(s) for error messages.
        extra: ``index -> dict`` of more fields to add to each item (e.g. the native-size
            ground truth), computed in the worker.
    """

    def __init__(
        self,
        base: Dataset,
        describe: Callable[[int], str],
        extra: Optional[Callable[[int], Dict[str, Any]]] = None,
    ) -> None:
        self.base = base
        self.describe = describe
        self.extra = extra

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        try:
            item = dict(self.base[index])
            item["index"] = index
            if self.extra is not None:
                item.update(self.extra(index))
            return item
        except Exception as exc:  # noqa: BLE001 -- any failure of one file is reported by name
            reason = str(exc).strip() or type(exc).__name__
            where = self.describe(index)
            if where and where in reason:
                return {"index": index, "error": reason}
            return {"index": index, "error": f"{where}: {reason}"}


def collate_guarded(batch: List[Dict[str, Any]], keep_as_list: Sequence[str] = ()) -> Dict[str, Any]:
    """Collate good items as usual, list the failed ones under ``"errors"``.

    Args:
        batch: items from :class:`GuardedDataset`.
        keep_as_list: keys whose values differ in shape between items (native-size masks),
            kept as Python lists.

    Returns:
        The collated batch (``{}`` fields when every item failed) plus ``errors``: a list of
        ``(index, message)``.
    """
    errors = [(item["index"], item["error"]) for item in batch if "error" in item]
    good = [item for item in batch if "error" not in item]
    out: Dict[str, Any] = {"errors": errors, "size": len(good)}
    if not good:
        return out
    lists = {k: [item.pop(k) for item in good] for k in keep_as_list if k in good[0]}
    out.update(default_collate(good))
    out.update(lists)
    return out
