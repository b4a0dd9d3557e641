"""Run configuration: one YAML of defaults, merged with a user file, CLI flags and ``--set``.

Precedence, later wins::

    configs/default.yaml  <  --config FILE.yaml  <  CLI flags  <  --set section.key=value

Every key must exist in the defaults: a typo is an error listing the valid keys of its section,
never a silently ignored setting. Values are checked against the type of their default
(``null`` defaults accept anything).
"""
from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

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


# Value checks that types alone do not catch: (dotted key, test, what the value must be).
# Every number test is False for NaN, so a NaN never passes (``nan <= 0`` is False).
_SEED_MAX = 2**32 - 1  # NumPy's legacy seeding accepts 0 .. 2**32 - 1


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _at_least(lo: float) -> Callable[[Any], bool]:
    return lambda v: _finite(v) and v >= lo


def _above(lo: float) -> Callable[[Any], bool]:
    return lambda v: _finite(v) and v > lo


def _within(lo: float, hi: float, hi_open: bool = False) -> Callable[[Any], bool]:
    return lambda v: _finite(v) and lo <= v and (v < hi if hi_open else v <= hi)


def _pair(test: Callable[[Any], bool], ordered: bool = True) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, (list, tuple)) and len(v) == 2 and all(test(x) for x in v)
                      and (not ordered or v[0] <= v[1]))


def _optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or test(v)


_PROBABILITY = (_within(0.0, 1.0), "a probability in [0, 1]")
_SEED = (_within(0, _SEED_MAX), f"an integer from 0 to {_SEED_MAX} (2**32 - 1, NumPy's seed range)")
_COUNT = (_at_least(1), "an integer >= 1")
_NON_NEGATIVE = (_at_least(0.0), "a finite number >= 0")

_CONSTRAINTS: Tuple[Tuple[str, Callable[[Any], bool], str], ...] = (
    ("data.val_fraction", lambda v: _finite(v) and 0.0 < v < 1.0, "between 0 and 1 (exclusive)"),
    ("data.split_seed", *_SEED),
    ("data.num_workers", _optional(_at_least(0)), "null (one per core on a GPU, up to 8; 2 on the CPU) or an integer >= 0"),
    ("data.augment.hflip_p", *_PROBABILITY),
    ("data.augment.vflip_p", *_PROBABILITY),
    ("data.augment.crop_p", *_PROBABILITY),
    ("data.augment.rotate_p", *_PROBABILITY),
    ("data.augment.color_p", *_PROBABILITY),
    ("data.augment.crop_scale", _optional(_pair(_within(1e-9, 1.0))), "null or [min, max] fractions in (0, 1], min <= max"),
    ("data.augment.crop_ratio", _optional(_pair(_above(0.0))), "null or [min, max] aspect ratios > 0, min <= max"),
    ("data.augment.rotate", *_NON_NEGATIVE),
    ("data.augment.scale", _optional(_pair(_above(0.0))), "null or [min, max] zoom factors > 0, min <= max"),
    ("data.augment.brightness", *_NON_NEGATIVE),
    ("data.augment.contrast", *_NON_NEGATIVE),
    ("data.augment.saturation", *_NON_NEGATIVE),
    ("data.augment.hue", _within(0.0, 0.5), "a number in [0, 0.5]"),
    ("data.augment.border", lambda v: v in ("reflect", "constant"), "reflect or constant"),
    ("data.synthetic.n_train", *_COUNT),
    ("data.synthetic.n_test", *_COUNT),
    ("data.synthetic.img_size", _at_least(32), "an integer >= 32"),
    ("data.synthetic.seed", *_SEED),
    ("data.synthetic.noncam_fraction", *_PROBABILITY),
    ("train.epochs", *_COUNT),
    ("train.batch_size", *_COUNT),
    ("train.accumulation_steps", *_COUNT),
    ("train.lr", _above(0.0), "a finite number > 0 (e.g. 0.003)"),
    ("train.stage2_lr_scale", _above(0.0), "a finite number > 0"),
    ("train.backbone_lr_scale", *_NON_NEGATIVE),
    ("train.weight_decay", *_NON_NEGATIVE),
    ("train.warmup_steps", _at_least(0), "an integer >= 0 (0: no warm-up)"),
    ("train.min_lr_ratio", _within(0.0, 1.0), "a number in [0, 1]"),
    ("train.betas", _pair(_within(0.0, 1.0, hi_open=True), ordered=False),
     "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    ("train.grad_clip", _NON_NEGATIVE[0], "a finite number >= 0 (0 disables clipping)"),
    ("train.precision", lambda v: v in ("auto", "bf16", "fp16", "fp32"), "one of auto, bf16, fp16, fp32"),
    ("train.ema_decay", _within(0.0, 1.0, hi_open=True), "a number in [0, 1)"),
    ("train.seed", *_SEED),
    ("train.budget_margin_seconds", _optional(_at_least(0.0)), "null or a number of seconds >= 0"),
    ("train.short_run_steps", _at_least(0), "an integer >= 0"),
    ("train.val_every_seconds", _NON_NEGATIVE[0], "a number of seconds >= 0 (0: every epoch)"),
    ("train.val_every_steps", _at_least(0), "an integer >= 0 (0: off)"),
    ("train.save_every_seconds", _NON_NEGATIVE[0], "a number of seconds >= 0 (0: off)"),
    ("train.save_every_steps", _at_least(0), "an integer >= 0 (0: off)"),
    ("train.max_nonfinite_steps", _at_least(0), "an integer >= 0 (0: never stop)"),
    ("train.log_every_steps", *_COUNT),
    ("loss.side_weight", *_NON_NEGATIVE),
    ("loss.aux_weight", *_NON_NEGATIVE),
    ("loss.edge_kernel", lambda v: _finite(v) and v >= 1 and v % 2 == 1, "a positive odd integer (e.g. 31)"),
    ("loss.edge_weight", *_NON_NEGATIVE),
    ("eval.batch_size", *_COUNT),
    ("eval.max_images", _at_least(0), "an integer >= 0 (0: every held-out image)"),
    ("eval.device_cache_mb", *_NON_NEGATIVE),
    ("eval.budget_fraction", _within(0.0, 1.0), "a number in [0, 1] (0: validate only at the end)"),
)


def _lookup(config: Mapping[str, Any], dotted: str) -> Tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _check_device(name: Any) -> None:
    """``train.device``: auto, cpu, cuda, cuda:N (or another device torch knows, e.g. mps)."""
    from engine.runtime import check_device_name

    try:
        check_device_name(name)
    except ValueError:
        raise ConfigError(
            f"train.device must be auto, cpu, cuda or cuda:N (e.g. --device cuda:0), got {name!r}."
        ) from None


def validate_config(config: Mapping[str, Any]) -> None:
    """Check values that types alone do not catch (the ``_CONSTRAINTS`` table, image size, device, model).

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
    for key, test, must_be in _CONSTRAINTS:
        present, value = _lookup(config, key)
        if present and not test(value):
            raise ConfigError(f"{key} must be {must_be}, got {value!r}. Fix it with --set {key}=VALUE or in the config file.")
    if not 0 <= train["stage1_epochs"] <= train["epochs"]:
        raise ConfigError(
            f"train.stage1_epochs must be between 0 and train.epochs ({train['epochs']}), got {train['stage1_epochs']}."
        )
    _check_device(train["device"])
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
