"""The layers a configuration is resolved from: reading, parsing and merging them.

Precedence, later wins::

    defaults  <  a resumed checkpoint's stored config  <  --config FILE.yaml  <  flags  <  --set key=value

The layers are plain nested dicts, merged key by key;
:meth:`engine.settings.request.ConfigRequest.resolve` validates the result once, into a
:class:`~engine.settings.run.RunConfig`, before the command writes anything.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Mapping, Type, Union

import yaml

from .errors import ConfigError

if TYPE_CHECKING:  # pydantic is imported by resolve time only: option parsing does without it
    from pydantic import BaseModel

__all__ = ["deep_merge", "known_keys", "load_yaml", "nest", "parse_set_overrides"]

PathLike = Union[str, Path]


def load_yaml(path: PathLike) -> Dict[str, Any]:
    """Read a YAML mapping (UTF-8).

    Raises:
        ConfigError: a missing file, bytes that are not UTF-8, invalid YAML, or a top level that is
            not a mapping; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): save the config file as UTF-8.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Invalid YAML in {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping of sections (model:, data:, train:...), got {type(data).__name__}.")
    return data


def nest(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"train.lr": 0.1}`` -> ``{"train": {"lr": 0.1}}``; ``None`` values (flags not given) left out."""
    nested: Dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set: {dotted} conflicts with another override of {part}.")
        node[parts[-1]] = value
    return nested


def parse_set_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """Turn ``["train.lr=0.001", "model.use_flash_attn=false"]`` into a nested dict.

    Values are parsed with ``yaml.safe_load`` (``false`` -> False, ``[1, 2]`` -> list).

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    flat: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r} (e.g. --set train.lr=0.001).")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set: invalid key {key!r} in {item!r}.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        flat[key] = _NULL if value is None else value
    return _restore_nulls(nest(flat))


class _Null:
    """``--set key=null`` must reach the config, where :func:`nest` drops None (a flag not given)."""


_NULL = _Null()


def _restore_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _restore_nulls(v) for k, v in node.items()}
    return None if node is _NULL else node


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    """``update`` over a copy of ``base``, mapping into mapping; any other value replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def known_keys(data: Mapping[str, Any], cls: Type["BaseModel"]) -> Dict[str, Any]:
    """``data`` without the keys ``cls`` no longer knows (a checkpoint written by an older version)."""
    from .fields import is_section

    out = {}
    for key, value in data.items():
        field_info = cls.model_fields.get(key)
        if field_info is None:
            continue
        if is_section(field_info) and isinstance(value, Mapping):
            value = known_keys(value, field_info.annotation)
        out[key] = value
    return out
