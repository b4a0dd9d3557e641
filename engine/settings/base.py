"""The base of every settings section: unknown keys refused, NaN and infinity refused."""
from __future__ import annotations

from typing import Any, Dict

from pydantic import BaseModel, ConfigDict

__all__ = ["SEED_MAX", "Section"]

#: NumPy's legacy seeding accepts 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1


class Section(BaseModel):
    """A group of settings. Unknown keys are errors (never a silently ignored typo), and no
    float field takes NaN or infinity (``--lr nan`` would train to a NaN loss)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    def to_dict(self) -> Dict[str, Any]:
        """Plain YAML/JSON values (lists for tuples), the shape of config.yaml and checkpoints."""
        return self.model_dump(mode="json")
