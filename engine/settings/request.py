"""One command's configuration request (config file, flags, ``--set``) and its resolution."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence

from .layers import PathLike, deep_merge, known_keys, load_yaml, nest, parse_set_overrides
from .run import RunConfig, validate_section

__all__ = ["ConfigRequest"]

_LAYERS = ("file", "flags", "sets")


@dataclass(frozen=True)
class ConfigRequest:
    """The layers a command gives, parsed but not yet validated.

    Attributes:
        file: the ``--config FILE.yaml`` mapping.
        flags: the flags given, nested by section (flags not given are absent).
        sets: the ``--set section.key=value`` items, nested.
    """

    file: Dict[str, Any] = field(default_factory=dict)
    flags: Dict[str, Any] = field(default_factory=dict)
    sets: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, config_file: Optional[PathLike] = None, flags: Optional[Mapping[str, Any]] = None,
             set_items: Sequence[str] = ()) -> "ConfigRequest":
        """Read the file and parse the flags and ``--set`` items.

        Args:
            config_file: a user YAML merged over the defaults.
            flags: flag values by dotted key (``None``: not given).
            set_items: ``--set section.key=value`` strings.

        Raises:
            engine.settings.ConfigError: an unreadable file or a malformed ``--set`` item.
        """
        file = load_yaml(config_file) if config_file is not None else {}
        return cls(file, nest(flags or {}), parse_set_overrides(set_items))

    def given(self, dotted: str, layers: Sequence[str] = _LAYERS) -> Any:
        """The value this command gives ``dotted`` (the last of ``layers`` that sets it), else None."""
        value = None
        for name in layers:
            node: Any = getattr(self, name)
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            if node is not None:
                value = node
        return value

    def resolve(self, stored: Optional[Mapping[str, Any]] = None) -> RunConfig:
        """Merge defaults < ``stored`` < file < flags < ``--set`` and validate, once.

        Args:
            stored: a resumed checkpoint's run config; keys today's settings no longer know are
                dropped.

        Raises:
            engine.settings.ConfigError: unknown keys, wrong types or values out of bounds, one
                line per problem naming the key.
        """
        merged = known_keys(stored, RunConfig) if stored else {}
        for name in _LAYERS:
            merged = deep_merge(merged, getattr(self, name))
        return validate_section(RunConfig, merged)
