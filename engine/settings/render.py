"""``configs/default.yaml`` and ``docs/configuration.md``, written from the settings classes.

Both files are generated (``python -m engine.settings --write``); ``tests/engine/test_settings.py``
fails when a committed copy differs from what the classes give.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Type

import yaml
from pydantic import BaseModel

from .describe import expected_text
from .fields import is_section
from .run import RunConfig

__all__ = ["DEFAULTS_FILE", "DOCS_FILE", "render_defaults", "render_docs"]

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS_FILE = ROOT / "configs" / "default.yaml"
DOCS_FILE = ROOT / "docs" / "configuration.md"

_YAML_HEADER = """\
# CamoXpert: every default of `python train_ultimate.py train` in one place.
# Generated from engine/settings (python -m engine.settings --write): edit the classes, not this file.
#
# Precedence (later wins): these defaults < --config FILE.yaml < CLI flags < --set section.key=value.
# Unknown keys are errors. The resolved configuration is saved as config.yaml in the
# checkpoint directory and inside every checkpoint (evaluate/predict read data.img_size there).
#
# These defaults are a small run that finishes in a few minutes on 2 CPU cores using the
# built-in synthetic data set. For real data (COD10K, CAMO...) start from configs/cod10k.yaml.
"""


def _scalar(value: Any) -> str:
    """One YAML value on one line (lists in flow style)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[:-4].strip() if text.endswith("\n...") else text


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0]


def _yaml_section(cls: Type[BaseModel], indent: str) -> List[str]:
    lines = []
    for name, info in cls.model_fields.items():
        if is_section(info):
            lines += [f"{indent}{name}:  # {_first_line(info.annotation.__doc__)}"]
            lines += _yaml_section(info.annotation, indent + "  ")
            continue
        default = info.get_default(call_default_factory=True)
        lines += [f"{indent}# {info.description}", f"{indent}{name}: {_scalar(default)}"]
    return lines


def render_defaults() -> str:
    """The text of ``configs/default.yaml``."""
    parts = [_YAML_HEADER]
    for name, info in RunConfig.model_fields.items():
        parts.append("\n".join([f"{name}:  # {_first_line(info.annotation.__doc__)}",
                                *_yaml_section(info.annotation, "  ")]) + "\n")
    return "\n".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _doc_rows(cls: Type[BaseModel], prefix: str) -> List[str]:
    rows = []
    for name, info in cls.model_fields.items():
        if is_section(info):
            rows += _doc_rows(info.annotation, f"{prefix}{name}.")
            continue
        default = _scalar(info.get_default(call_default_factory=True))
        accepts = expected_text(info.annotation, info.metadata)
        rows.append(f"| `{prefix}{name}` | `{_cell(default)}` | {_cell(accepts)} | {_cell(info.description or '')} |")
    return rows


def render_docs() -> str:
    """The text of ``docs/configuration.md``: every key, its default, what it accepts and its help."""
    out = ["# Configuration", "",
           "Generated from `engine/settings` (`python -m engine.settings --write`); edit the classes, not this page.",
           "", "Precedence, later wins: defaults (`configs/default.yaml`) < a resumed checkpoint's stored config <",
           "`--config FILE.yaml` < `train` flags < `--set section.key=value`. Unknown keys and values out of bounds",
           "stop the command (exit code 2) before it writes anything, naming the key.", ""]
    for name, info in RunConfig.model_fields.items():
        out += [f"## `{name}`", "", _first_line(info.annotation.__doc__), "",
                "| key | default | accepts | description |", "|---|---|---|---|",
                *_doc_rows(info.annotation, f"{name}."), ""]
    return "\n".join(out)
