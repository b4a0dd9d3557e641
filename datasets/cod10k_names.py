"""The category a COD10K file name carries.

COD10K names its files ``COD10K-<CAM|NonCAM>-<superId>-<Super>-<subId>-<Sub>-<n>``,
e.g. ``COD10K-CAM-1-Aquatic-3-Flounder-11.jpg``; the synthetic set uses the same
scheme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .image_folders import IMAGE_EXTENSIONS

__all__ = ["Cod10kCategory", "parse_cod10k_category"]


@dataclass(frozen=True)
class Cod10kCategory:
    """Category encoded in a COD10K file name.

    ``COD10K-CAM-1-Aquatic-3-Flounder-11`` gives ``camouflaged=True``,
    ``super_class="Aquatic"`` (id 1) and ``sub_class="Flounder"`` (id 3).
    """

    camouflaged: bool
    super_class: Optional[str] = None
    sub_class: Optional[str] = None
    super_class_id: Optional[int] = None
    sub_class_id: Optional[int] = None


# COD10K-<CAM|NonCAM>[-<superId>-<Super>[-<subId>-<Sub>]][-<rest>]
_COD10K_RE = re.compile(
    r"^COD10K-(?P<kind>CAM|NonCAM)"
    r"(?:-(?P<super_id>\d+)-(?P<super>[^-]*[A-Za-z][^-]*)"
    r"(?:-(?P<sub_id>\d+)-(?P<sub>[^-]*[A-Za-z][^-]*))?)?"
    r"(?:-.*)?$",
    re.IGNORECASE,
)


def parse_cod10k_category(name: str) -> Optional[Cod10kCategory]:
    """Parse the category out of a COD10K file name or stem.

    Args:
        name: File name or stem, e.g. ``"COD10K-CAM-1-Aquatic-3-Flounder-11.jpg"``.

    Returns:
        The category, or ``None`` if the name is not a COD10K name.
        Super and sub classes are ``None`` where the name does not carry them.
    """
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else Path(name).name
    match = _COD10K_RE.match(stem)
    if match is None:
        return None
    g = match.groupdict()
    return Cod10kCategory(
        camouflaged=g["kind"].lower() == "cam",
        super_class=g["super"],
        sub_class=g["sub"],
        super_class_id=None if g["super_id"] is None else int(g["super_id"]),
        sub_class_id=None if g["sub_id"] is None else int(g["sub_id"]),
    )

