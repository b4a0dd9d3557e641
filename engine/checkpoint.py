"""Checkpoint files: atomic writes (:mod:`engine.files`), weights-only loads, and rebuilding the model they hold.

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)``; a file carrying pickled code is refused and its code never
runs. Before that load, the CRC-32 that torch's zip writer stores for every record is checked,
because ``torch.load`` does not: a file whose bytes changed on disk is refused instead of
silently giving wrong weights. Keys written by the trainer:

``format``, ``version``, ``model_config`` (dict of :class:`CamoXpertConfig`), ``model``
(state dict), ``ema`` (state dict or None), ``optimizer``, ``scheduler``, ``scaler``, ``epoch``,
``step``, ``rng``, ``config`` (the resolved run config), ``metrics``.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from engine.config import ConfigError
from engine.files import PathLike, atomic_torch_save
from models import CamoXpert, CamoXpertConfig, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "check_checkpoint_file",
    "check_finite_weights",
    "load_checkpoint",
    "load_weights",
    "model_from_checkpoint",
    "save_checkpoint",
    "strip_state_dict_prefixes",
    "verify_checkpoint_crcs",
]

CHECKPOINT_FORMAT = "camoxpert-checkpoint"

# Records are read in chunks of this size for the CRC check: memory stays small for any file size.
_CRC_CHUNK = 1 << 20
# MS-DOS "directory" bit of a zip entry's external attributes.
_DOS_DIRECTORY = 0x10


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

    Zip-format files have every record's CRC-32 checked first (see :func:`verify_checkpoint_crcs`).

    Raises:
        CheckpointError: file missing; damaged (a record fails its CRC); pickled code refused;
            corrupt/truncated; not ours.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}. Pass the path of a last.pt/best.pt written by `train`.")
    check_checkpoint_file(path)
    verify_checkpoint_crcs(path)
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
    _check_configs(ckpt, path)
    return ckpt


def check_checkpoint_file(path: Path, advice: str = "Pass the last.pt or best.pt that `python train_ultimate.py train` wrote.") -> None:
    """Refuse files that are neither a torch zip archive nor a legacy pickle stream (text, images...).

    Args:
        path: the file.
        advice: the sentence that ends the message (what to pass instead).

    Raises:
        CheckpointError: naming the file and what it starts with.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise CheckpointError(f"Could not read checkpoint {path}: {exc.strerror or exc}. Check its permissions.") from exc
    # torch.save writes a zip archive ("PK" local header; a truncated one is reported by torch.load
    # as corrupt); very old files are a pickle stream (protocol byte 0x80).
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80" or zipfile.is_zipfile(path):
        return
    shown = head[:24].decode("utf-8", "replace").replace("\n", " ").strip()
    kind = "an empty file" if not head else f"it starts with {shown!r}"
    raise CheckpointError(
        f"{path} is not a checkpoint file ({kind}; checkpoints written by torch.save are zip archives). {advice}"
    )


def verify_checkpoint_crcs(path: PathLike) -> None:
    """Check the CRC-32 of every record of a torch zip checkpoint; ``torch.load`` does not.

    Each record is read once, in chunks, and compared with the checksum ``torch.save`` stored
    for it, so a file whose bytes changed after it was written (bit rot, a bad copy) is caught
    before its weights are used. Costs one extra sequential read of the file (about 35 ms per
    100 MB from the page cache, 65 ms from disk, on a 2-core test machine).

    Files this check cannot judge pass silently, so their existing errors stay as they are:
    legacy pickle files (no zip) and zips too damaged to open (truncated: no central directory),
    which ``torch.load`` reports as corrupt or truncated. Records with a stored CRC of 0 and a
    non-empty body are skipped: torch writes 0 for every record when
    ``torch.serialization.set_crc32_options(False)`` was in effect, while a real CRC of 0 for
    non-empty data has a chance of 2**-32. (An empty record's true CRC is 0, so it is checked.)

    Raises:
        CheckpointError: naming the file, the damaged record (e.g. ``archive/data/12``) and the fix.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except Exception:  # zipfile raises BadZipFile, UnicodeDecodeError, ... on a malformed directory
        return  # legacy pickle, truncated or unreadable: torch.load gives the message
    with archive:
        for info in archive.infolist():
            if info.CRC == 0 and info.file_size > 0:
                continue  # written with CRC computation off (see above)
            try:
                if info.external_attr & _DOS_DIRECTORY:
                    # torch's reader (miniz) treats a record flagged as a folder as empty and hands
                    # back an uninitialised buffer; zipfile ignores the flag, and torch never sets it.
                    raise zipfile.BadZipFile("the record is flagged as a folder")
                with archive.open(info) as record:
                    while record.read(_CRC_CHUNK):
                        pass
            except Exception as exc:
                if isinstance(exc, OSError) and exc.errno is not None:
                    return  # the disk failed to read it: torch.load meets that too and says so
                # Anything else is a record whose bytes no longer match what was written: zipfile
                # raises BadZipFile for a CRC mismatch, and BadZipFile, UnicodeDecodeError,
                # NotImplementedError, zlib.error... for a local header changed on disk.
                raise CheckpointError(
                    f"Checkpoint {path} is damaged: its record {info.filename} fails the archive's integrity "
                    f"check ({exc}; torch.save stores a CRC-32 of every record). Its bytes changed after it was "
                    f"written (a disk fault, a bad or incomplete copy), so its weights cannot be trusted. Use "
                    f"another checkpoint (last.pt and best.pt are written atomically, so an earlier one is "
                    f"intact), or copy the file again from its source."
                ) from exc


def _check_configs(ckpt: Dict[str, Any], path: Path) -> None:
    """Check the stored model and run configs against today's settings.

    A value of the wrong type (``img_size: "big"``) would otherwise fail deep inside model
    building or data loading with a traceback; here it is one message naming the key.
    Run-config keys the settings no longer know are ignored (older checkpoints).
    """
    from engine.settings import ModelSettings, RunConfig, validate_section
    from engine.settings.layers import known_keys

    config = ckpt.get("config")
    try:
        validate_section(ModelSettings, ckpt["model_config"], prefix="model_config.")
        if config is not None:
            if not isinstance(config, dict):
                raise ConfigError(f"'config' must be a mapping of sections, got {type(config).__name__}")
            validate_section(RunConfig, known_keys(config, RunConfig), prefix="config.")
    except ConfigError as exc:
        raise CheckpointError(
            f"{path} holds an invalid setting: {exc} The file was edited or written by an incompatible version; "
            f"use another checkpoint (or re-save it with a valid value)."
        ) from exc


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
    source: Optional[PathLike] = None,
    **config_overrides: Any,
) -> CamoXpert:
    """Rebuild the model a checkpoint describes and load its weights (EMA weights when present).

    Args:
        ckpt: a path or an already loaded checkpoint dict.
        device: where to put the model.
        prefer_ema: use the EMA weights when the checkpoint has them.
        source: the file an already loaded ``ckpt`` came from (named in errors).
        **config_overrides: model config fields to change (e.g. ``use_flash_attn=False``).

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: an unreadable file, or weights that do not fit the model it describes.
    """
    if not isinstance(ckpt, Mapping):
        source = source or ckpt
        ckpt = load_checkpoint(ckpt)
    source = source or "the checkpoint"
    cfg = dict(ckpt["model_config"])
    # The weights come from the checkpoint: never ask the hub or a file for backbone weights.
    cfg.update(pretrained=False, pretrained_weights=None, **config_overrides)
    try:
        model = build_model(CamoXpertConfig.from_dict(cfg))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"The model_config of {source} cannot build a model: {exc}") from exc
    weights: Optional[Mapping[str, torch.Tensor]] = ckpt.get("ema") if prefer_ema else None
    weights = weights or ckpt["model"]
    check_finite_weights(weights, source)
    load_weights(model, weights, source)
    return model.to(device).eval()


def check_finite_weights(state_dict: Mapping[str, Any], source: Any) -> None:
    """Refuse weights holding NaN or inf: such a model predicts nothing (all-zero masks) without failing.

    Raises:
        CheckpointError: naming the first such tensor, how many are affected, and the fix.
    """
    bad = [key for key, value in state_dict.items()
           if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        first = state_dict[bad[0]]
        count = int((~torch.isfinite(first)).sum())
        raise CheckpointError(
            f"The weights in {source} hold NaN or inf values ({len(bad)} tensor(s), e.g. {bad[0]}: {count} of "
            f"{first.numel()} values): the run diverged before this save, and such a model predicts nothing. Use "
            f"an earlier checkpoint of the run, or train again with a lower --lr or --set train.precision=fp32."
        )


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, Any], source: Any) -> None:
    """``model.load_state_dict`` (prefixes stripped) whose failure names the source and the fix.

    Raises:
        CheckpointError: missing/unexpected keys or tensors whose shapes differ from the model's.
    """
    try:
        model.load_state_dict(strip_state_dict_prefixes(state_dict))
    except (RuntimeError, TypeError, AttributeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
        detail = "; ".join(lines) or str(exc)[:300]
        raise CheckpointError(
            f"The weights in {source} do not fit the model its model_config describes ({detail}). The file was "
            f"edited or mixes two runs; use the last.pt/best.pt written together with its config."
        ) from exc
