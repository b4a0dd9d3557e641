"""Value checks shared by the sections: ``[min, max]`` pairs. Messages start with "must" (see
:mod:`engine.settings.errors`)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

__all__ = ["check_pair"]


def check_pair(value: Optional[Tuple[float, float]], low: float, high: float = math.inf, low_open: bool = True,
               ordered: bool = True, what: str = "") -> Optional[Tuple[float, float]]:
    """Refuse a pair with an item outside its interval or, when ``ordered``, with min > max.

    Args:
        value: the pair (None passes: the op is off).
        low: lowest item allowed (excluded when ``low_open``).
        high: highest item allowed (included).
        low_open: whether ``low`` itself is refused.
        ordered: whether min <= max is required.
        what: how the message names the pair's items, e.g. "fractions".
    """
    if value is None:
        return None
    inside = all((low < v if low_open else low <= v) and v <= high for v in value)
    if not inside or (ordered and value[0] > value[1]):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]" if math.isfinite(high) else f"> {low:g}"
        raise ValueError(f"must be null or [min, max] {what} {interval}, min <= max, got {list(value)}.")
    return value
