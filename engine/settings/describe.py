"""What a field accepts, in words: ``an integer >= 1``, ``a number in [0, 1]``, ``one of a, b``.

One wording serves the error messages, the generated ``docs/configuration.md`` and the comments
of ``configs/default.yaml``, so the three never disagree about a bound.
"""
from __future__ import annotations

from typing import Annotated, Any, Iterable, List, Literal, Optional, Sequence, Tuple, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["bounds_text", "expected_text", "number_text"]


def number_text(value: Any) -> str:
    """``1.0`` -> ``1``, ``0.5`` -> ``0.5``, ``4294967295`` as is."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(metadata: Iterable[Any]) -> dict:
    found = {}
    for item in metadata:
        for key in ("ge", "gt", "le", "lt"):
            value = getattr(item, key, None)
            if value is not None:
                found[key] = value
        found.update(_bounds(getattr(item, "metadata", None) or ()))  # a FieldInfo inside Annotated
    return found


def bounds_text(metadata: Iterable[Any]) -> str:
    """`` >= 0``, `` in [0, 1)``... from pydantic's constraint objects; empty when unbounded."""
    b = _bounds(metadata)
    lo = ("[", b["ge"]) if "ge" in b else ("(", b["gt"]) if "gt" in b else None
    hi = (b["le"], "]") if "le" in b else (b["lt"], ")") if "lt" in b else None
    if lo and hi:
        return f" in {lo[0]}{number_text(lo[1])}, {number_text(hi[0])}{hi[1]}"
    if lo:
        return f" {'>=' if lo[0] == '[' else '>'} {number_text(lo[1])}"
    if hi:
        return f" {'<=' if hi[1] == ']' else '<'} {number_text(hi[0])}"
    return ""


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _sequence_text(origin: Any, args: Tuple[Any, ...], metadata: List[Any]) -> str:
    if origin is tuple and args and args[-1] is not Ellipsis:  # a fixed-size tuple: a pair
        return f"a list of {len(args)}: " + ", ".join(expected_text(a, metadata) for a in args)
    item = expected_text(args[0], metadata) if args else "anything"
    return f"a list, each {item}"


def expected_text(annotation: Any, metadata: Optional[Iterable[Any]] = None) -> str:
    """What a field of this type and these constraints accepts, in words.

    Args:
        annotation: the field's type (``Optional[int]``, ``Literal[...]``, ``Tuple[int, ...]``...).
        metadata: pydantic's constraint objects for it (``FieldInfo.metadata``).
    """
    metadata = list(metadata or ())
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return expected_text(args[0], [*metadata, *args[1:]])
    if origin is Union:
        parts = [expected_text(a, metadata) for a in args if a is not type(None)]
        text = _join(parts)
        return f"null or {text}" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args) if len(args) > 1 else str(args[0])
    if origin in (list, tuple, List, Tuple):
        return _sequence_text(origin, args, metadata)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a section (" + ", ".join(annotation.model_fields) + ")"
    if annotation is bool:
        return "a boolean (true or false)"
    if annotation is int:
        return "an integer" + bounds_text(metadata)
    if annotation is float:
        return "a number" + bounds_text(metadata)
    if annotation is str:
        return "a string"
    return getattr(annotation, "__name__", str(annotation))
