"""``save_pretrained`` / ``from_pretrained``: a trained model as ``model.safetensors`` + ``config.json``
+ ``README.md``, the layout segmentation_models_pytorch and BiRefNet publish on the Hugging Face Hub.

The folder holds one set of weights (the EMA weights when the run kept them) in safetensors,
which stores tensors only: loading it runs no code, unlike a pickle. ``config.json`` holds what
rebuilding and feeding the network needs and nothing about the machine that trained it:

``format``, ``format_version``, ``model`` (:class:`models.CamoXpertConfig` as a dict),
``input_size`` (``[height, width]`` the network was trained at), ``normalization`` (``mean``,
``std``, ``max_pixel_value``), ``weights`` (``ema`` or ``model``), ``step``, ``epoch``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from engine.checkpoint import CheckpointError, check_finite_weights, load_checkpoint, strip_state_dict_prefixes
from engine.files import PathLike, atomic_write_text, staged_path
from models import CamoXpert, CamoXpertConfig, build_model

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "NORMALIZATION",
    "PRETRAINED_FORMAT",
    "WEIGHTS_NAME",
    "PretrainedError",
    "PretrainedModel",
    "check_weights_match",
    "from_pretrained",
    "load_pretrained",
    "pretrained_config",
    "save_pretrained",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
PRETRAINED_FORMAT = "camoxpert-pretrained"
#: Raised when the layout changes; a folder of a newer version is refused, not misread.
FORMAT_VERSION = 1
#: The ImageNet statistics every input pipeline of this project normalises with
#: (``datasets.transforms.IMAGENET_MEAN``/``IMAGENET_STD``; a test keeps the two equal). Repeated
#: here so that loading a model does not import the data stack.
NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "max_pixel_value": 255.0}

_RE_EXPORT = "Write the folder again from its checkpoint: python train_ultimate.py export --format hf --checkpoint best.pt --output DIR."


class PretrainedError(CheckpointError):
    """A pretrained folder or Hub model that is missing, incomplete, or does not match its config.

    A :class:`~engine.checkpoint.CheckpointError`, so every command reports it as a bad input
    (one line, exit code 2).
    """


@dataclass
class PretrainedModel:
    """A model loaded from a pretrained folder and what its ``config.json`` says about it.

    Attributes:
        model: the network in eval mode on its device.
        folder: the folder it was read from (a Hub snapshot for Hub ids).
        img_size: ``(height, width)`` it was trained at.
        used_ema: whether the weights are the run's EMA weights.
        epoch: the epoch of the weights, when recorded.
        step: the optimizer step of the weights, when recorded.
        config: the whole ``config.json``.
    """

    model: CamoXpert
    folder: Path
    img_size: Tuple[int, int]
    used_ema: bool
    epoch: Optional[float]
    step: Optional[int]
    config: Dict[str, Any]


def _weights_of(ckpt: Mapping[str, Any]) -> Tuple[Dict[str, torch.Tensor], str]:
    """The weights to publish and their kind: the EMA weights where the run kept them.

    best.pt stores its validated EMA weights as ``model`` (marked ``weights: "ema"``); last.pt
    keeps them apart in ``ema``.
    """
    if ckpt.get("ema"):
        return dict(ckpt["ema"]), "ema"
    return dict(ckpt["model"]), "ema" if ckpt.get("weights") == "ema" else "model"


def pretrained_config(ckpt: Mapping[str, Any], weights_kind: str = "model") -> Dict[str, Any]:
    """The ``config.json`` content for a loaded checkpoint.

    Args:
        ckpt: a checkpoint dict as :func:`engine.checkpoint.load_checkpoint` returns it.
        weights_kind: ``ema`` or ``model``.
    """
    from engine.inference.predictor import checkpoint_img_size  # imported here: predictor imports this package

    model = dict(ckpt["model_config"])
    # The weights are in the folder: rebuilding must never fetch or read backbone weights.
    model.update(pretrained=False, pretrained_weights=None)
    epoch, step = ckpt.get("epoch"), ckpt.get("step")
    return {
        "format": PRETRAINED_FORMAT,
        "format_version": FORMAT_VERSION,
        "library_name": "camoxpert",
        "model": CamoXpertConfig.from_dict(model).to_dict(),
        "input_size": list(checkpoint_img_size(ckpt)),
        "normalization": dict(NORMALIZATION),
        "weights": weights_kind,
        "step": int(step) if isinstance(step, int) else None,
        "epoch": epoch if isinstance(epoch, (int, float)) and math.isfinite(epoch) else None,
    }


def _tensors_for_file(weights: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """Contiguous CPU copies: safetensors refuses tensors that share memory or are views."""
    return {key: value.detach().to("cpu").contiguous().clone()
            for key, value in strip_state_dict_prefixes(weights).items() if torch.is_tensor(value)}


def save_pretrained(
    checkpoint: Union[PathLike, Mapping[str, Any]],
    out_dir: PathLike,
    license: str = "mit",
    scores: Optional[Mapping[str, Any]] = None,
    repo_id: Optional[str] = None,
) -> Path:
    """Write a checkpoint as ``model.safetensors``, ``config.json`` and a ``README.md`` model card.

    Each file is written atomically (a temporary file renamed over it), weights first, so an
    interrupted write leaves the previous file of that name, never a truncated one.

    Args:
        checkpoint: a ``best.pt``/``last.pt`` path or an already loaded checkpoint dict.
        out_dir: the folder to write (created when missing; the three files are replaced).
        license: the license named in the model card (an SPDX-style id as the Hub lists them).
        scores: ``evaluate --output-json`` results to add to the card (per test set).
        repo_id: the Hub id it will be published under (named in the card's usage examples).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        engine.checkpoint.CheckpointError: an unreadable checkpoint or one with non-finite weights.
        engine.files.FileWriteError: a file could not be written (names it).
    """
    from safetensors.torch import save_file

    from engine.sharing.model_card import model_card

    source = checkpoint if not isinstance(checkpoint, Mapping) else "the checkpoint"
    ckpt = checkpoint if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint)
    weights, kind = _weights_of(ckpt)
    check_finite_weights(weights, source)  # a diverged run is not published
    config = pretrained_config(ckpt, kind)
    out = Path(out_dir)
    with staged_path(out / WEIGHTS_NAME) as tmp:
        save_file(_tensors_for_file(weights), str(tmp), metadata={"format": "pt"})
        # save_file replaces the staged file with one of its own, readable by its owner alone.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    atomic_write_text(out / CARD_NAME, model_card(ckpt, config, license=license, scores=scores, repo_id=repo_id))
    return out


def _read_config(folder: Path, name: str) -> Dict[str, Any]:
    """``config.json`` of ``folder``, checked for the format and version this release reads."""
    path = folder / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PretrainedError(f"{name} has no {CONFIG_NAME}. Pass a folder written by save_pretrained or "
                              f"`export --format hf`, or a best.pt/last.pt.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainedError(f"Could not read {path}: {exc}. {_RE_EXPORT}") from exc
    if not isinstance(config, dict) or config.get("format") != PRETRAINED_FORMAT:
        raise PretrainedError(f"{path} is not a CamoXpert model config (its 'format' is not {PRETRAINED_FORMAT!r}). "
                              f"{_RE_EXPORT}")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PretrainedError(f"{path} has format_version {version!r}; this release reads version {FORMAT_VERSION} "
                              f"and older. Upgrade camoxpert (pip install -U camoxpert) to load it.")
    return config


def _parse_config(config: Mapping[str, Any], path: Path) -> Tuple[CamoXpertConfig, Tuple[int, int]]:
    """The model config and input size of a ``config.json``; a bad value is named with its key."""
    from engine.inference.predictor import parse_img_size

    try:
        model = dict(config["model"])
        model.update(pretrained=False, pretrained_weights=None)
        model_config = CamoXpertConfig.from_dict(model)
    except (KeyError, TypeError, ValueError) as exc:
        raise PretrainedError(f"{path}: its 'model' entry cannot build a model ({exc}). {_RE_EXPORT}") from exc
    try:
        size = parse_img_size(config.get("input_size"))
    except (TypeError, ValueError) as exc:
        raise PretrainedError(f"{path}: 'input_size' {config.get('input_size')!r} is not a size ({exc}).") from exc
    norm = config.get("normalization") or {}
    for key in ("mean", "std"):
        if not _close(norm.get(key), NORMALIZATION[key]):
            raise PretrainedError(
                f"{path}: normalization.{key} is {norm.get(key)!r}, but this release feeds every model images "
                f"normalised with the ImageNet {key} {NORMALIZATION[key]}; such a model would see other inputs "
                f"than it was trained on. {_RE_EXPORT}")
    return model_config, size


def _close(values: Any, expected: List[float]) -> bool:
    try:
        return len(values) == len(expected) and all(abs(float(a) - b) < 1e-6 for a, b in zip(values, expected))
    except (TypeError, ValueError):
        return False


def _read_weights(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise PretrainedError(f"{path.parent} has no {WEIGHTS_NAME}: the folder is incomplete. {_RE_EXPORT}")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 -- safetensors raises its own SafetensorError on a damaged file
        raise PretrainedError(f"Could not read {path}: {str(exc).strip()[:200]}. The file is damaged or "
                              f"incomplete; download or copy it again. {_RE_EXPORT}") from exc


def check_weights_match(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], name: str) -> None:
    """Refuse weights whose keys or shapes differ from the model ``config.json`` describes.

    Raises:
        PretrainedError: naming the first missing, unexpected or mis-shaped key and the counts.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    problems = []
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} tensor(s) of another shape, e.g. {k}: {tuple(weights[k].shape)} in "
                        f"{WEIGHTS_NAME}, {tuple(expected[k].shape)} in the model")
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
    if problems:
        raise PretrainedError(f"The {CONFIG_NAME} of {name} does not match its {WEIGHTS_NAME}: "
                              f"{'; '.join(problems)}. The files come from different models or one was edited. "
                              f"{_RE_EXPORT}")


def load_pretrained(folder: PathLike, device: Union[str, torch.device] = "cpu",
                    name: Optional[str] = None, **config_overrides: Any) -> PretrainedModel:
    """Load a folder written by :func:`save_pretrained` into a model in eval mode.

    Args:
        folder: the folder (or a Hub snapshot of one).
        device: where to put the model.
        name: how to name the model in errors (a Hub id); default the folder.
        **config_overrides: model config fields to change (e.g. ``use_flash_attn=False``).

    Raises:
        PretrainedError: a missing or foreign ``config.json``, a damaged ``model.safetensors``,
            non-finite weights, or a config that does not match the weights (naming the key).
    """
    folder = Path(folder)
    name = name or str(folder)
    config = _read_config(folder, name)
    model_config, size = _parse_config(config, folder / CONFIG_NAME)
    weights = _read_weights(folder / WEIGHTS_NAME)
    check_finite_weights(weights, folder / WEIGHTS_NAME)
    if config_overrides:
        model_config = CamoXpertConfig.from_dict({**model_config.to_dict(), **config_overrides})
    model = build_model(model_config)
    check_weights_match(model, weights, name)
    model.load_state_dict(weights)
    step, epoch = config.get("step"), config.get("epoch")
    return PretrainedModel(
        model=model.to(device).eval(), folder=folder, img_size=size, used_ema=config.get("weights") == "ema",
        epoch=epoch if isinstance(epoch, (int, float)) else None, step=step if isinstance(step, int) else None,
        config=config,
    )


def from_pretrained(name_or_path: PathLike, device: Union[str, torch.device] = "cpu", **config_overrides: Any) -> CamoXpert:
    """A trained model from a pretrained folder, a Hugging Face Hub id (``user/name``) or a checkpoint file.

    Hub ids are read from the local Hugging Face cache, downloaded there first unless
    ``HF_HUB_OFFLINE=1`` is set.

    Args:
        name_or_path: the folder, ``user/name`` (``user/name@revision``), or a ``best.pt``/``last.pt``.
        device: where to put the model.
        **config_overrides: model config fields to change (e.g. ``use_flash_attn=False``).

    Returns:
        The model in eval mode.

    Raises:
        engine.checkpoint.CheckpointError: (:class:`PretrainedError` for folders and Hub ids) the
            model cannot be found or loaded; the message names it and the fix.
    """
    from engine.checkpoint import model_from_checkpoint
    from engine.sharing.source import resolve_model_source

    source = resolve_model_source(name_or_path)
    if source.kind == "file":
        return model_from_checkpoint(source.path, device=device, **config_overrides)
    return load_pretrained(source.path, device, name=source.name, **config_overrides).model
