"""Writing a pretrained folder from any model source, and publishing one on the Hugging Face Hub.

Publishing is always an explicit request (``export --format hf --push-to-hub user/name`` or
:func:`push_to_hub`): a run never uploads anything. The folder is loaded back before it is
sent, so a damaged or mismatched one is refused here instead of published.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from engine.files import PathLike, atomic_write_bytes
from engine.sharing.pretrained import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, PretrainedError, load_pretrained, save_pretrained
from engine.sharing.source import hub_offline, parse_hub_id, resolve_model_source

__all__ = ["PRETRAINED_DIR", "PUBLISHED_FILES", "export_pretrained", "push_to_hub", "read_scores", "write_run_pretrained"]

#: The files of a pretrained folder, as uploaded.
PUBLISHED_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
#: Where a ``train`` run writes its pretrained folder, inside its checkpoint folder.
PRETRAINED_DIR = "pretrained"


def write_run_pretrained(run_dir: PathLike, status: str = "completed",
                         log: Callable[[str], None] = print) -> Optional[Path]:
    """At the end of a run, write ``<run_dir>/pretrained/`` from its ``best.pt`` (nothing without one).

    Written for a run stopped by a signal too, so the folder always holds the weights of the
    best.pt beside it (a resumed run writes it again at its end); skipped for a run that trained
    nothing (``status`` ``nothing``). A failure is a warning, not a failed run: best.pt is intact, and
    ``export --format hf --checkpoint best.pt`` writes the folder later.

    Returns:
        The folder written, or None.
    """
    from engine.checkpoint import CheckpointError
    from engine.files import FileWriteError

    best = Path(run_dir) / "best.pt"
    if status == "nothing" or not best.is_file():
        return None
    out = Path(run_dir) / PRETRAINED_DIR
    try:
        save_pretrained(best, out)
    except (CheckpointError, FileWriteError, OSError) as exc:
        log(f"Warning: the pretrained folder {out} was not written ({exc}). best.pt is intact; write it later with "
            f"python train_ultimate.py export --format hf --checkpoint {best} --output {out}")
        return None
    log(f"Pretrained model (model.safetensors, config.json, README.md) in {out}")
    return out


def read_scores(path: PathLike) -> Mapping[str, Any]:
    """The scores ``evaluate --output-json`` wrote, for the model card.

    Raises:
        PretrainedError: the file is missing or not such a JSON object.
    """
    try:
        scores = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainedError(f"Could not read the scores file {path}: {exc}. Pass the JSON that "
                              f"`evaluate --output-json` wrote.") from exc
    if not isinstance(scores, dict):
        raise PretrainedError(f"{path} is not an `evaluate --output-json` file (a JSON object of test sets).")
    return scores


def export_pretrained(model: PathLike, out_dir: PathLike, license: str = "mit",
                      scores: Optional[Mapping[str, Any]] = None, repo_id: Optional[str] = None) -> Path:
    """Write the pretrained folder of ``model`` (checkpoint file, pretrained folder or Hub id).

    A checkpoint is converted (:func:`~engine.sharing.pretrained.save_pretrained`); a folder or
    Hub model is checked by loading it, then its files are copied, card included (``scores``,
    ``license`` and ``repo_id``, the Hub id named in the card, apply to checkpoints only: an
    existing card is kept as written).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        engine.checkpoint.CheckpointError: the source cannot be loaded.
        engine.files.FileWriteError: a file could not be written.
    """
    source = resolve_model_source(model)
    out = Path(out_dir)
    if source.kind == "file":
        return save_pretrained(source.path, out, license=license, scores=scores, repo_id=repo_id)
    load_pretrained(source.path, name=source.name)  # refuse a broken folder before copying it
    if source.path.resolve() == out.resolve():
        return out
    for name in PUBLISHED_FILES:
        if (source.path / name).is_file():
            atomic_write_bytes(out / name, (source.path / name).read_bytes())
    return out


def push_to_hub(folder: PathLike, repo_id: str, private: bool = False, token: Optional[str] = None,
                commit_message: Optional[str] = None, log: Callable[[str], None] = print) -> str:
    """Upload a pretrained folder to the Hugging Face Hub (the repository is created if needed).

    Args:
        folder: a folder written by :func:`~engine.sharing.pretrained.save_pretrained`.
        repo_id: ``user/name`` on the Hub.
        private: create the repository private (an existing one keeps its visibility).
        token: a Hub token; None uses the logged-in one (``hf auth login``) or ``HF_TOKEN``.
        commit_message: the commit's message.
        log: where progress lines go.

    Returns:
        The URL of the commit (or of the repository).

    Raises:
        PretrainedError: a bad id, offline mode, a folder that does not load, a failed upload.
    """
    parsed = parse_hub_id(repo_id)
    if parsed is None or parsed[1] is not None:
        raise PretrainedError(f"--push-to-hub {repo_id!r} is not a Hub repository id: use user/name (no @revision).")
    if hub_offline():
        raise PretrainedError(f"Cannot push to {repo_id}: HF_HUB_OFFLINE=1 is set. Unset it to upload.")
    folder = Path(folder)
    load_pretrained(folder)  # a folder that does not load back is never published
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise PretrainedError("Publishing needs huggingface_hub: pip install huggingface_hub.") from None
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        log(f"Uploading {folder} to https://huggingface.co/{repo_id}")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), allow_patterns=list(PUBLISHED_FILES),
                                 commit_message=commit_message or "Upload CamoXpert model")
    except Exception as exc:  # noqa: BLE001 -- HTTP, auth and validation errors of huggingface_hub
        text = " ".join(str(exc).split())[:300]
        raise PretrainedError(f"Could not upload {folder} to {repo_id} ({type(exc).__name__}: {text}). Log in with "
                              f"`hf auth login` (a token with write access) and check the network.") from exc
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")
