"""Plain-dict entry points to the run configuration, for callers that index sections.

The settings themselves (defaults, types, bounds, help) are the classes of
:mod:`engine.settings`; this module resolves them into the dict shape of config.yaml and
checkpoints and writes that YAML. Precedence, later wins::

    defaults  <  --config FILE.yaml  <  flags  <  --set section.key=value
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import yaml

from engine.files import PathLike, atomic_open
from engine.settings.errors import ConfigError
from engine.settings.layers import load_yaml, parse_set_overrides

__all__ = [
    "ConfigError",
    "DEFAULT_CONFIG_PATH",
    "load_default_config",
    "load_yaml",
    "parse_set_overrides",
    "resolve_config",
    "save_config",
]


def _find_default_config() -> Path:
    # In a checkout the file sits next to the packages; an installed package ships it under
    # <prefix>/configs (setup.cfg data_files). It is generated from engine.settings, and read
    # by people: the code takes its defaults from the classes.
    candidates = [
        Path(__file__).resolve().parents[1] / "configs" / "default.yaml",
        Path(sys.prefix) / "configs" / "default.yaml",
    ]
    for path in candidates:
        if path.is_file():
            return path
    return candidates[0]


DEFAULT_CONFIG_PATH = _find_default_config()


def load_default_config() -> Dict[str, Any]:
    """Every default, as the nested dict ``configs/default.yaml`` holds."""
    from engine.settings import RunConfig

    return RunConfig().to_dict()


def resolve_config(
    config_file: Optional[PathLike] = None,
    flags: Optional[Mapping[str, Any]] = None,
    set_items: Sequence[str] = (),
    base: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The run configuration as a checked dict (:meth:`engine.settings.ConfigRequest.resolve`).

    Args:
        config_file: a user YAML merged over the defaults.
        flags: flag values by dotted key (``None`` = not given).
        set_items: ``--set section.key=value`` strings, applied last.
        base: a stored config (e.g. a checkpoint's) merged over the defaults, under the rest;
            keys the settings no longer know are dropped.

    Raises:
        ConfigError: unknown keys, wrong types or invalid values.
    """
    from engine.settings import ConfigRequest

    return ConfigRequest.read(config_file, flags, set_items).resolve(stored=base).to_dict()


def save_config(config: Union[Mapping[str, Any], Any], path: PathLike) -> Path:
    """Write the resolved config (a dict or an ``engine.settings.RunConfig``) as YAML, atomically."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    with atomic_open(path, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=None)
    return Path(path)
