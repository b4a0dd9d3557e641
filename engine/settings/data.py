"""The ``data`` section: where images come from, their size, split, loading and augmentation."""
from __future__ import annotations

from typing import List, Literal, Optional, Tuple

from pydantic import Field, field_validator

from .base import SEED_MAX, Section
from .checks import check_pair

__all__ = ["AugmentSettings", "DataSettings", "MAX_IMG_SIZE", "SyntheticSettings"]

#: Largest training resolution: a 4096 px square is 50 MB a uint8 image in OpenCV and far more on
#: the GPU per image in the batch; past it a typo (``--img-size 1000000``) would exhaust memory.
MAX_IMG_SIZE = 4096
_PROBABILITY = dict(ge=0.0, le=1.0)
Pair = Optional[Tuple[float, float]]


class AugmentSettings(Section):
    """Training augmentation (``datasets.DEFAULT_TRAIN_AUG``); ``*_p`` is a probability."""

    hflip_p: float = Field(0.5, **_PROBABILITY, description="Probability of a horizontal flip")
    vflip_p: float = Field(
        0.0, **_PROBABILITY, description="Probability of a vertical flip (off: most scenes have a gravity direction)")
    crop_p: float = Field(0.5, **_PROBABILITY, description="Probability of a random resized crop")
    crop_scale: Pair = Field((0.6, 1.0), description="[min, max] fraction of the image area the crop keeps")
    crop_ratio: Pair = Field((0.75, 1.3333), description="[min, max] aspect ratio of the crop")
    rotate_p: float = Field(0.3, **_PROBABILITY, description="Probability of a rotation and zoom")
    rotate: float = Field(15.0, ge=0.0, description="Largest rotation, in degrees either way")
    scale: Pair = Field((0.9, 1.1), description="[min, max] zoom drawn with the rotation")
    color_p: float = Field(0.5, **_PROBABILITY, description="Probability of a colour jitter")
    brightness: float = Field(0.2, ge=0.0, description="Colour jitter: brightness change")
    contrast: float = Field(0.2, ge=0.0, description="Colour jitter: contrast change")
    saturation: float = Field(0.2, ge=0.0, description="Colour jitter: saturation change")
    hue: float = Field(
        0.02, ge=0.0, le=0.5, description="Colour jitter: hue shift (small: camouflage is colour similarity)")
    border: Literal["reflect", "constant"] = Field("reflect", description="Fill of the corners a rotation uncovers")

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, value: Pair) -> Pair:
        return check_pair(value, 0.0, 1.0, what="fractions in")

    @field_validator("crop_ratio", "scale")
    @classmethod
    def _positive_pair(cls, value: Pair) -> Pair:
        return check_pair(value, 0.0, what="numbers")


class SyntheticSettings(Section):
    """The built-in synthetic camouflage set, used when no dataset path is given."""

    n_train: int = Field(240, ge=1, description="Training scenes generated")
    n_test: int = Field(40, ge=1, description="Test scenes generated")
    img_size: int = Field(160, ge=32, le=MAX_IMG_SIZE, description="Resolution of the generated images in px")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of the generator")
    noncam_fraction: float = Field(
        0.1, **_PROBABILITY, description="Share of scenes without an object (empty masks)")
    cache_dir: Optional[str] = Field(
        None, description="Where the set is cached; null: ~/.cache/camoxpert or $CAMOXPERT_CACHE")


class DataSettings(Section):
    """Training data: folders, resolution, held-out split, loading and augmentation."""

    dataset_paths: List[str] = Field(
        default_factory=list,
        description="Dataset folders (COD10K-v3, SINet-V2, CAMO, image/mask pairs...), combined; "
                    "empty: the built-in synthetic set")
    img_size: int = Field(
        128, ge=32, le=MAX_IMG_SIZE,
        description=f"Training resolution in px: a multiple of 32 (the backbone's stride), "
                    f"at most {MAX_IMG_SIZE} (memory)")
    val_fraction: float = Field(
        0.15, gt=0.0, lt=1.0, description="Share of the training images held out for model selection")
    split_seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of the train/validation split")
    num_workers: Optional[int] = Field(
        None, ge=0,
        description="DataLoader workers per process; null: one per CPU core on a GPU, up to 8; 2 on the CPU")
    cache: bool = Field(False, description="Keep decoded images in memory")
    skip_bad_samples: bool = Field(
        False, description="Train without unreadable/unpaired/mismatched samples instead of stopping (exit code 2)")
    augment: AugmentSettings = Field(default_factory=AugmentSettings, description=AugmentSettings.__doc__)
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings, description=SyntheticSettings.__doc__)

    @field_validator("dataset_paths", mode="before")
    @classmethod
    def _one_path(cls, value):
        return [value] if isinstance(value, str) else value  # a single folder given as a string

    @field_validator("img_size")
    @classmethod
    def _multiple_of_32(cls, size: int) -> int:
        if size % 32:
            lo = size // 32 * 32
            raise ValueError(f"must be a multiple of 32 (the backbone's output stride), got {size}. "
                             f"Consider {lo} or {lo + 32}.")
        return size
