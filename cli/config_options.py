"""Click flags built from the settings' fields: each flag declares the field it sets.

A :class:`ConfigOption`'s help is its field's description, its type follows the field's
(``int``, ``float``, a choice, an on/off pair) and ``--help`` shows the field's default. A flag
left out is ``None`` and does not override the configuration; the bounds are checked once,
with every other layer, when the configuration is resolved.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Literal, Optional, Union, get_args, get_origin

import click

__all__ = ["ConfigOption", "config_flags", "config_option"]


def _click_type(annotation: Any) -> Any:
    """The click type of a field's annotation (``Optional`` stripped, ``Literal`` as a choice)."""
    if get_origin(annotation) is Union:
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in get_args(annotation)])
    return annotation if annotation in (int, float, str) else str


class ConfigOption(click.Option):
    """A flag that sets one configuration field (``config_key``, e.g. ``train.lr``).

    Args:
        param_decls: the flag's names, as for ``click.option``.
        config_key: the dotted key of the field it sets.
        **attrs: other ``click.Option`` arguments (e.g. ``type=click.Path(...)``, ``multiple``).
    """

    def __init__(self, param_decls, config_key: str, **attrs: Any):
        from engine.settings import field_info

        info = field_info(config_key)
        self.config_key = config_key
        self.field_default = info.get_default(call_default_factory=True)
        attrs.setdefault("help", info.description)
        attrs.setdefault("default", None)
        if any("/" in d for d in param_decls):
            pass  # an on/off pair (--use-ema/--no-ema) is a boolean flag already
        elif info.annotation is bool:
            attrs.setdefault("is_flag", True)
        elif not attrs.get("multiple"):
            attrs.setdefault("type", _click_type(info.annotation))
        super().__init__(param_decls, **attrs)

    def get_help_record(self, ctx: click.Context) -> Optional[tuple]:
        """The field's description followed by its default (``[8]``, ``[on]``); none for null/empty."""
        record = super().get_help_record(ctx)
        default = self.field_default
        if record is None or default is None or default == [] or default == ():
            return record
        shown = ("on" if default else "off") if isinstance(default, bool) else default
        return record[0], f"{record[1]} [{shown}]"


def config_option(*param_decls: str, key: str, **attrs: Any) -> Callable:
    """``click.option`` for a flag that sets the field ``key`` (see :class:`ConfigOption`)."""
    return click.option(*param_decls, cls=ConfigOption, config_key=key, **attrs)


def config_flags(ctx: click.Context) -> Dict[str, Any]:
    """The configuration flags given to this command, by dotted key (``None``: not given)."""
    given = {}
    for param in ctx.command.params:
        if isinstance(param, ConfigOption):
            value = ctx.params.get(param.name)
            if param.multiple:
                value = list(value) if value else None
            given[param.config_key] = value
    return given
