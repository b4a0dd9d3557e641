"""Where a model comes from: a checkpoint file, a pretrained folder, or a Hugging Face Hub id.

Every command that loads a trained model takes one string for it (``--checkpoint``/``--model``);
:func:`resolve_model_source` decides which of the three it names, in this order: an existing
file, an existing folder, then ``user/name`` (optionally ``@revision``) for the Hub. Anything else
is left to the checkpoint loader, whose "not found" message names the path.

Hub downloads go through ``huggingface_hub.snapshot_download`` into the usual Hugging Face cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``), read when the call is made, so a cache or offline flag
set after start-up is honoured. With ``HF_HUB_OFFLINE=1`` only the cache is read: a model not in
it is an error at once, never a network wait.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from engine.files import PathLike
from engine.sharing.pretrained import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, PretrainedError

__all__ = ["ModelSource", "download_from_hub", "hub_offline", "parse_hub_id", "resolve_model_source"]

# Hub repository ids: "owner/name", letters, digits, "-", "_", "." (not leading), at most 96 each.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<rev>[\w./-]+))?$")
# A missing path with one of these endings is a checkpoint file that is not there, not a Hub id.
_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json", ".onnx")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class ModelSource:
    """What a model argument names.

    Attributes:
        kind: ``file`` (a checkpoint, possibly missing: its loader names it), ``folder`` or ``hub``.
        path: the file or folder on this machine (for ``hub``, the snapshot in the HF cache).
        name: the argument as given (a Hub id keeps its ``@revision``).
    """

    kind: str
    path: Path
    name: str


def parse_hub_id(value: str) -> Optional[Tuple[str, Optional[str]]]:
    """``"user/name"`` -> ``("user/name", None)``, ``"user/name@v1"`` -> ``("user/name", "v1")``;
    None for anything that is not shaped like a Hub id (paths, file names)."""
    match = _HUB_ID.match(value)
    if match is None or match.group("repo").lower().endswith(_FILE_SUFFIXES) or value.startswith("."):
        return None
    if os.path.isdir(match.group("repo").split("/")[0]):
        return None  # "checkpoints/run1": a path under an existing local folder, not an owner on the Hub
    return match.group("repo"), match.group("rev")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _cache_dir() -> Optional[str]:
    """The Hub cache as the environment names it now (None: huggingface_hub's own default)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _hub_error(repo_id: str, revision: Optional[str], exc: Exception, offline: bool) -> PretrainedError:
    """One line naming the id and the fix for a failed Hub download."""
    from huggingface_hub import errors

    ref = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(exc, errors.HFValidationError):
        return PretrainedError(f"{ref} is not a valid Hub id ({exc}); use user/name.")
    if isinstance(exc, errors.LocalEntryNotFoundError) or offline:
        why = "HF_HUB_OFFLINE=1 is set" if offline else "the Hub could not be reached"
        fix = "unset HF_HUB_OFFLINE and run again" if offline else "check the network and run again"
        return PretrainedError(
            f"{ref} is no file or folder here, and as a Hub id it is not in the local Hugging Face cache ({_cache_dir() or 'the default cache'}) and {why}. "
            f"Fetch it once where the Hub is reachable ({fix}, or `hf download {repo_id}`), or pass a local "
            f"folder or best.pt instead.")
    if isinstance(exc, (errors.RepositoryNotFoundError, errors.GatedRepoError)):
        return PretrainedError(f"{ref} is no file or folder here, and no model of that id was found on the Hugging "
                               f"Face Hub (or it is private or gated: log in "
                               f"with `hf auth login`). Check the id (user/name), or pass a local folder or best.pt.")
    if isinstance(exc, errors.RevisionNotFoundError):
        return PretrainedError(f"Model {repo_id} has no revision {revision!r} on the Hub; use a branch, tag or commit "
                               f"it has, or leave out @revision.")
    text = " ".join(str(exc).split())[:200]
    return PretrainedError(f"Could not download model {ref} from the Hugging Face Hub ({type(exc).__name__}: {text}). "
                           f"Check the network, or set HF_HUB_OFFLINE=1 to use the cached copy.")


def download_from_hub(repo_id: str, revision: Optional[str] = None) -> Path:
    """The snapshot folder of ``repo_id`` in the HF cache, downloaded there unless offline.

    Raises:
        PretrainedError: huggingface_hub missing, the id unknown, or (offline) not in the cache.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise PretrainedError(f"Loading {repo_id} from the Hugging Face Hub needs huggingface_hub: "
                              f"pip install huggingface_hub, or pass a local folder or best.pt.") from None
    offline = hub_offline()
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=_cache_dir(), local_files_only=offline,
                                   allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME], library_name="camoxpert")
    except Exception as exc:  # noqa: BLE001 -- huggingface_hub raises HTTP, cache and validation errors
        raise _hub_error(repo_id, revision, exc, offline) from exc
    return Path(folder)


def resolve_model_source(value: PathLike) -> ModelSource:
    """Tell a checkpoint file, a pretrained folder and a Hub id apart; Hub models are fetched.

    Args:
        value: ``best.pt``, a folder with ``config.json`` + ``model.safetensors``, or ``user/name``
            (``user/name@revision``).

    Returns:
        A :class:`ModelSource` whose ``path`` is on this machine (a missing file keeps
        ``kind="file"``: the checkpoint loader names it).

    Raises:
        PretrainedError: a folder that holds no model, or a Hub id that cannot be fetched.
    """
    text = os.fspath(value)
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file() and (path / "best.pt").is_file():
            raise PretrainedError(f"{path} is a run folder, not a pretrained model folder: pass {path / 'best.pt'}, "
                                  f"or {path / 'pretrained'} where the run wrote one.")
        return ModelSource("folder", path, text)
    if path.exists() or isinstance(value, Path):
        return ModelSource("file", path, text)
    hub = parse_hub_id(text)
    if hub is None:
        return ModelSource("file", path, text)
    return ModelSource("hub", download_from_hub(*hub), text)
