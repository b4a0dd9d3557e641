"""Trained models in the field's shared format: a folder (or Hugging Face Hub repository) holding
``model.safetensors``, ``config.json`` and a ``README.md`` model card.

:func:`save_pretrained` writes it from a checkpoint, :func:`from_pretrained` loads it back, and
:func:`resolve_model_source` tells a checkpoint file, such a folder and a Hub id apart for every
command that loads a model (through :func:`engine.inference.predictor.load_inference_model`).
"""
from __future__ import annotations

from engine.sharing.pretrained import (
    CONFIG_NAME,
    CARD_NAME,
    PRETRAINED_FORMAT,
    WEIGHTS_NAME,
    PretrainedError,
    PretrainedModel,
    from_pretrained,
    load_pretrained,
    save_pretrained,
)
from engine.sharing.source import ModelSource, resolve_model_source

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "PRETRAINED_FORMAT",
    "WEIGHTS_NAME",
    "ModelSource",
    "PretrainedError",
    "PretrainedModel",
    "from_pretrained",
    "load_pretrained",
    "resolve_model_source",
    "save_pretrained",
]
