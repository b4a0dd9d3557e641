"""Configuration errors: pydantic's validation errors turned into one clear line per problem.

Every line names the dotted key (``train.lr``), what it accepts (the bound) and the value given,
e.g. ``train.lr must be a number > 0, got -1.0.``; an unknown key lists the valid keys beside it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Type

if TYPE_CHECKING:  # ConfigError is imported by code that must not need pydantic (option parsing)
    from pydantic import BaseModel, ValidationError
    from pydantic.fields import FieldInfo

__all__ = ["ConfigError", "format_validation_error"]


class ConfigError(ValueError):
    """A configuration file, flag or override is invalid."""


# Errors whose text a validator of ours wrote (it starts with "must ..." or names its fields).
_OWN_MESSAGE = ("value_error", "assertion_error")


def _is_section(field: Optional["FieldInfo"]) -> bool:
    from .fields import is_section

    return field is not None and is_section(field)


def _locate(root: Type["BaseModel"], loc: Sequence[Any]) -> Tuple[List[str], Optional["FieldInfo"], Type["BaseModel"]]:
    """Walk ``loc`` down the sections: (field path, the field reached or None, the last section)."""
    path: List[str] = []
    section, field = root, None
    for part in loc:
        if not isinstance(part, str) or part not in section.model_fields or (field and not _is_section(field)):
            break
        field = section.model_fields[part]
        path.append(part)
        if _is_section(field):
            section = field.annotation
    return path, field, section


def _message(err: dict, root: Type["BaseModel"], prefix: str) -> str:
    from .describe import expected_text

    path, field, section = _locate(root, err["loc"])
    key = prefix + ".".join(path)
    if err["type"] == "extra_forbidden":
        unknown = prefix + ".".join(str(p) for p in err["loc"])
        where = f"section '{key}'" if path else f"'{prefix[:-1]}'" if prefix else "the top level"
        return f"Unknown config key '{unknown}'. Valid keys in {where}: {', '.join(section.model_fields)}."
    if err["type"] in _OWN_MESSAGE:
        text = str(err.get("ctx", {}).get("error") or err["msg"])
        if not key:
            return text
        return f"{key} {text}" if text.startswith("must") and not _is_section(field) else f"{key}: {text}"
    if field is None or _is_section(field):
        return f"'{key or prefix[:-1]}' must be {expected_text(section)}, got {err['input']!r}."
    hint = f" Fix it with --set {key}=VALUE or in the config file." if not prefix else ""
    return f"{key} must be {expected_text(field.annotation, field.metadata)}, got {err['input']!r}.{hint}"


def format_validation_error(exc: "ValidationError", root: Type["BaseModel"], prefix: str = "") -> ConfigError:
    """One :class:`ConfigError` holding a line per problem pydantic found.

    Args:
        exc: pydantic's error.
        root: the class that was validated (``RunConfig`` or a section), to name fields and list keys.
        prefix: put before every key, e.g. ``config.`` for a checkpoint's stored run config.
    """
    lines = [_message(err, root, prefix) for err in exc.errors(include_url=False)]
    return ConfigError("\n".join(dict.fromkeys(lines)))
