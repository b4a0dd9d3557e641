"""Walking the settings' fields: every leaf with its dotted key, and one field by key."""
from __future__ import annotations

from typing import Iterator, Optional, Tuple, Type

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["field_info", "is_section", "leaf_fields"]


def is_section(info: FieldInfo) -> bool:
    """Whether a field holds a nested section rather than a value."""
    kind = info.annotation
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def leaf_fields(cls: Optional[Type[BaseModel]] = None, prefix: str = "") -> Iterator[Tuple[str, FieldInfo]]:
    """``("train.lr", FieldInfo)`` for every value field, in declaration order.

    Args:
        cls: the class to walk (default: :class:`~engine.settings.run.RunConfig`).
        prefix: dotted path of ``cls``.
    """
    if cls is None:
        from .run import RunConfig

        cls = RunConfig
    for name, info in cls.model_fields.items():
        if is_section(info):
            yield from leaf_fields(info.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def field_info(dotted: str) -> FieldInfo:
    """The field of a dotted key (``train.lr``).

    Raises:
        KeyError: no such field.
    """
    for key, info in leaf_fields():
        if key == dotted:
            return info
    raise KeyError(dotted)
