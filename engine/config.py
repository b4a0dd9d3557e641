"""Run configuration: one YAML of defaults, merged with a user file, CLI flags and ``--set``.

Precedence, later wins::

    configs/default.yaml  <  --config FILE.yaml  <  CLI flags  <  --set section.key=value

Every key must exist in the defaults: a typo is an error listing the valid keys of its section,
never a silently ignored setting. Values are checked against the type of their default
(``null`` defaults accept anything).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import yaml

from engine.files import PathLike, atomic_open

__all__ = [
    "ConfigError",
    "DEFAULT_CONFIG_PATH",
    "apply_overrides",
    "load_default_config",
    "load_yaml",
    "merge_config",
    "parse_set_overrides",
    "resolve_config",
    "save_config",
    "validate_config",
]


class ConfigError(ValueError):
    """A configuration file, flag or override is invalid."""


def _find_default_config() -> Path:
    # In a checkout the file sits next to the packages; an installed package ships it under
    # <prefix>/configs (setup.cfg data_files).
    candidates = [
        Path(__file__).resolve().parents[1] / "configs" / "default.yaml",
        Path(sys.prefix) / "configs" / "default.yaml",
    ]
    for path in candidates:
        if path.is_file():
            return path
    return candidates[0]


DEFAULT_CONFIG_PATH = _find_default_config()


def load_yaml(path: PathLike) -> Dict[str, Any]:
    """Read a YAML mapping.

    Raises:
        ConfigError: missing file, invalid YAML, or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Invalid YAML in {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, data:, train:...), got {type(data).__name__}.")
    return data


def load_default_config() -> Dict[str, Any]:
    """The defaults from ``configs/default.yaml``."""
    return load_yaml(DEFAULT_CONFIG_PATH)


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of ``default``; convert where it is unambiguous."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads "1e-3" (no dot) as a string.
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            return [value]
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    else:
        return value
    raise ConfigError(f"{key} must be {_type_name(default)} (default: {default!r}), got {value!r}.")


def merge_config(base: Mapping[str, Any], update: Mapping[str, Any], prefix: str = "",
                 strict: bool = True) -> Dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``.

    Args:
        base: the reference config; its keys are the valid keys.
        update: values to apply.
        prefix: dotted path of ``base`` (for messages).
        strict: unknown keys raise; otherwise they are dropped.

    Raises:
        ConfigError: unknown key (listing the valid ones) or wrong type.
    """
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in out:
            if not strict:
                continue
            where = f"section '{prefix[:-1]}'" if prefix else "the top level"
            raise ConfigError(
                f"Unknown config key '{dotted}'. Valid keys in {where}: {', '.join(sorted(out))}."
            )
        default = out[key]
        if isinstance(default, dict) and default:
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{dotted}' is a section ({', '.join(sorted(default))}), got {value!r}.")
            out[key] = merge_config(default, value, prefix=f"{dotted}.", strict=strict)
        else:
            out[key] = _coerce(dotted, value, default)
    return out


def parse_set_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """Turn ``["train.lr=0.001", "model.use_flash_attn=false"]`` into a nested dict.

    Values are parsed with ``yaml.safe_load`` (``false`` -> False, ``[1, 2]`` -> list).

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    nested: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r} (e.g. --set train.lr=0.001).")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"--set: invalid key {key!r} in {item!r}.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set: {key} conflicts with another override of {part}.")
        node[parts[-1]] = value
    return nested


def apply_overrides(config: Mapping[str, Any], flat: Mapping[str, Any]) -> Dict[str, Any]:
    """Apply ``{"train.lr": 0.001, ...}`` (CLI flags); ``None`` values mean "not given"."""
    nested: Dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return merge_config(config, nested)


def validate_config(config: Mapping[str, Any]) -> None:
    """Check values that types alone do not catch.

    Raises:
        ConfigError: saying which value and how to fix it.
    """
    data, train = config["data"], config["train"]
    size = data["img_size"]
    if size < 32 or size % 32:
        lo, hi = max(32, size // 32 * 32), max(32, -(-size // 32) * 32)
        raise ConfigError(
            f"data.img_size must be a positive multiple of 32 (the backbone's output stride), got {size}. "
            f"Consider {lo}" + (f" or {hi}." if hi != lo else ".")
        )
    if not 0.0 < data["val_fraction"] < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {data['val_fraction']}.")
    for key in ("epochs", "batch_size", "accumulation_steps"):
        if train[key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {train[key]}.")
    if not 0 <= train["stage1_epochs"] <= train["epochs"]:
        raise ConfigError(
            f"train.stage1_epochs must be between 0 and train.epochs ({train['epochs']}), got {train['stage1_epochs']}."
        )
    if train["lr"] <= 0:
        raise ConfigError(f"train.lr must be > 0, got {train['lr']}.")
    if data["num_workers"] < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {data['num_workers']}.")
    if train["precision"] not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"train.precision must be one of auto, bf16, fp16, fp32, got {train['precision']!r}.")
    if not 0.0 <= train["ema_decay"] < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {train['ema_decay']}.")
    # The model section must build a valid CamoXpertConfig (its own checks list the fix).
    from models import SUPPORTED_BACKBONES, CamoXpertConfig

    if config["model"]["backbone"] not in SUPPORTED_BACKBONES:
        raise ConfigError(
            f"Unknown backbone {config['model']['backbone']!r}. Valid backbones: {', '.join(SUPPORTED_BACKBONES)}."
        )
    try:
        CamoXpertConfig.from_dict(config["model"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from exc


def resolve_config(
    config_file: Optional[PathLike] = None,
    flags: Optional[Mapping[str, Any]] = None,
    set_items: Sequence[str] = (),
    base: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Build the run configuration.

    Args:
        config_file: a user YAML merged over the defaults.
        flags: CLI flag values by dotted key (``None`` = not given).
        set_items: ``--set section.key=value`` strings, applied last.
        base: start from this config instead of the defaults (e.g. a checkpoint's config when
            resuming); keys the defaults no longer know are dropped.

    Returns:
        The merged, validated config dict.

    Raises:
        ConfigError: unknown keys, wrong types or invalid values.
    """
    config = load_default_config()
    if base is not None:
        config = merge_config(config, base, strict=False)
    if config_file is not None:
        config = merge_config(config, load_yaml(config_file))
    config = apply_overrides(config, flags or {})
    config = merge_config(config, parse_set_overrides(set_items))
    validate_config(config)
    return config


def save_config(config: Mapping[str, Any], path: PathLike) -> Path:
    """Write the resolved config as YAML (key order kept), atomically."""
    with atomic_open(path, "w") as fh:
        yaml.safe_dump(dict(config), fh, sort_keys=False, default_flow_style=None)
    return Path(path)
