"""Checkpoint files: atomic writes (:mod:`engine.files`), weights-only loads, and rebuilding the model they hold.

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)``; a file carrying pickled code is refused and its code never
runs. Keys written by the trainer:

``format``, ``version``, ``model_config`` (dict of :class:`CamoXpertConfig`), ``model``
(state dict), ``ema`` (state dict or None), ``optimizer``, ``scheduler``, ``scaler``, ``epoch``,
``step``, ``rng``, ``config`` (the resolved run config), ``metrics``.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from engine.files import PathLike, atomic_torch_save
from models import CamoXpert, CamoXpertConfig, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
    "strip_state_dict_prefixes",
]

CHECKPOINT_FORMAT = "camoxpert-checkpoint"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unsafe, corrupt, or not a CamoXpert checkpoint."""


def save_checkpoint(state: Mapping[str, Any], path: PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename).

    A process killed mid-write leaves the previous file intact, never a truncated one.
    """
    payload = {"format": CHECKPOINT_FORMAT, "version": 1, **state}
    return atomic_torch_save(payload, path)


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: file missing; pickled code refused; corrupt/truncated; not ours.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}. Pass the path of a last.pt/best.pt written by `train`.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Refused to load {path}: it holds pickled Python objects or code that a weights-only load "
            f"does not allow, so nothing from it was executed ({str(exc).splitlines()[0][:200]}). "
            f"Only tensors and plain values are accepted; if you trust the file, re-save its state dict "
            f"with torch.save(model.state_dict(), ...)."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Could not read checkpoint {path}: {exc}. The file is corrupt or truncated; use another "
            f"checkpoint (last.pt and best.pt are written atomically, so an earlier one is intact)."
        ) from exc
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("model_config"), dict)
        or not isinstance(ckpt.get("model"), dict)
    ):
        raise CheckpointError(
            f"{path} is not a CamoXpert checkpoint (no 'model_config'/'model' entries). Checkpoints from "
            f"`python train_ultimate.py train` carry the model config needed to rebuild the model."
        )
    return ckpt


def strip_state_dict_prefixes(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove ``_orig_mod.`` (torch.compile) and ``module.`` (DDP) prefixes from keys."""
    out = {}
    for key, value in state_dict.items():
        parts = [p for p in key.split(".") if p not in ("_orig_mod", "module")]
        out[".".join(parts)] = value
    return out


def model_from_checkpoint(
    ckpt: Union[PathLike, Mapping[str, Any]],
    device: Union[str, torch.device] = "cpu",
    prefer_ema: bool = True,
    **config_overrides: Any,
) -> CamoXpert:
    """Rebuild the model a checkpoint describes and load its weights (EMA weights when present).

    Args:
        ckpt: a path or an already loaded checkpoint dict.
        device: where to put the model.
        prefer_ema: use the EMA weights when the checkpoint has them.
        **config_overrides: model config fields to change (e.g. ``use_flash_attn=False``).

    Returns:
        The model in eval mode.
    """
    if not isinstance(ckpt, Mapping):
        ckpt = load_checkpoint(ckpt)
    cfg = dict(ckpt["model_config"])
    # The weights come from the checkpoint: never ask the hub or a file for backbone weights.
    cfg.update(pretrained=False, pretrained_weights=None, **config_overrides)
    model = build_model(CamoXpertConfig.from_dict(cfg))
    weights: Optional[Mapping[str, torch.Tensor]] = ckpt.get("ema") if prefer_ema else None
    model.load_state_dict(strip_state_dict_prefixes(weights or ckpt["model"]))
    return model.to(device).eval()
