"""Scores as a plain-text table and as JSON (NaN written as null)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict

import numpy as np

from datasets import display_path
from engine.evaluation.metrics import RESULT_KEYS
from engine.evaluation.scoring import TestSetResult
from engine.files import PathLike, atomic_open

__all__ = ["format_results_table", "results_to_json", "write_results_json"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def format_results_table(results: Dict[str, TestSetResult], per_category: bool = True) -> str:
    """A plain-text table: one row per test set (and per COD10K super-class under it).

    Sub-class scores are in the JSON only (COD10K has 69 of them).
    """
    keys = [k for k in RESULT_KEYS if any(k in r.metrics for r in results.values())]
    rows = [["Test set"] + keys]
    for name, res in results.items():
        rows.append([name] + [_fmt(res.metrics.get(k, float("nan"))) for k in keys])
        if per_category:
            for cls, m in res.metrics.get("per_category", {}).get("super_class", {}).items():
                rows.append([f"  {cls}"] + [_fmt(m.get(k, float("nan"))) for k in keys])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    # NaN/inf are not JSON: an empty group becomes null rather than an unparsable file.
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def results_to_json(results: Dict[str, TestSetResult]) -> Dict[str, Any]:
    """``{"<test set>": {"n", "Sm", ..., "MAE", "per_category": {...}}}`` (NaN written as null).

    A set with samples left out by ``--skip-bad-samples`` also gets ``"skipped_files"``:
    ``[{"path", "reason"}]``, so the file itself says its scores do not cover the whole set.
    """
    out = {}
    for name, res in results.items():
        entry = _json_safe(res.metrics)
        if res.skipped_files:
            entry["skipped_files"] = [{"path": display_path(p), "reason": r} for p, r in res.skipped_files]
        out[name] = entry
    return out


def write_results_json(results: Dict[str, TestSetResult], path: PathLike) -> Path:
    """Write :func:`results_to_json` to ``path`` (parent folders created)."""
    with atomic_open(path, "w") as fh:
        json.dump(results_to_json(results), fh, indent=2)
        fh.write("\n")
    return Path(path)
