"""Durations such as ``8h30m``, ``90m``, ``240s``, ``1.5h`` or a plain number of seconds.

Kept free of pydantic and torch: the time budget's parser is shared by the typed settings
(checked when a configuration is resolved) and :mod:`engine.training.budget`.
"""
from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["MAX_DURATION_S", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([hms])", re.IGNORECASE)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
#: The longest budget accepted: 30 days. A longer one is a typo (``1e9h``), and the schedule
#: arithmetic and the deadline guard assume a budget a clock can count down.
MAX_DURATION_S = 30 * 24 * 3600.0
_FORMS = "a positive duration such as 240s, 90m, 1.5h or 8h30m (or a number of seconds), at most 30 days"


def parse_duration(text: Any) -> float:
    """Seconds in ``8h30m``, ``90m``, ``240s``, ``1h``, ``1.5h`` or a plain number of seconds.

    Args:
        text: the duration (a string, or a number of seconds).

    Raises:
        ValueError: an empty, negative, zero, infinite, unreadable or longer-than-30-days duration;
            the message starts with "must be" and shows the valid forms.
    """
    if isinstance(text, bool):
        raise ValueError(f"must be {_FORMS}, got {text!r}.")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        raw = str(text).strip().replace(" ", "")
        try:
            seconds = float(raw)
        except ValueError:
            parts = _DURATION.findall(raw)
            if not parts or "".join(n + u for n, u in parts).lower() != raw.lower():
                raise ValueError(f"must be {_FORMS}, got {text!r}.") from None
            seconds = sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in parts)
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_DURATION_S:
        raise ValueError(f"must be {_FORMS}, got {text!r}.")
    return seconds
