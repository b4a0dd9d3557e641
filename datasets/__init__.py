"""COD data pipeline: dataset discovery, validation, loading, augmentation, synthetic scenes.

Typical use::

    from datasets import (discover_dataset, combine, check_splits, split_train_val,
                          CODDataset, build_train_transform, worker_init_fn)

    splits = combine([discover_dataset(p) for p in dataset_paths])
    try:
        splits, report = check_splits(splits, skip_bad_samples=skip_bad_samples)
    except DatasetValidationError as exc:
        sys.exit(f"{exc}")            # the CLI exits with code 2
    if not report.ok:
        print(report.format())        # warnings, or the samples that were skipped
    train, val = split_train_val(splits.train, val_fraction=0.1, seed=0)
    train_ds = CODDataset(train, build_train_transform(384))

Names are imported on first use: discovery, validation and the synthetic
generator need only OpenCV and numpy, so ``make-synthetic`` or a dataset
check does not pay the seconds it takes to import torch and albumentations.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Public name -> submodule that defines it.
_EXPORTS = {
    # discovery (datasets.layouts re-exports the names of the modules it is built from)
    "IMAGE_EXTENSIONS": "image_folders",
    "Cod10kCategory": "cod10k_names",
    "SampleRef": "splits",
    "DatasetSplits": "splits",
    "DatasetLayoutError": "image_folders",
    "parse_cod10k_category": "cod10k_names",
    "SYNTHETIC_NAME": "layouts",
    "UnusableEntry": "image_folders",
    "discover_dataset": "layouts",
    "discover_pairs": "layouts",
    "combine": "splits",
    # validation
    "Problem": "validation_report",
    "ValidationReport": "validation_report",
    "DatasetValidationError": "validation_report",
    "UnpairedFiles": "validation",
    "validate_samples": "validation",
    "validate_splits": "validation",
    "check_splits": "validation",
    "DecodeCache": "decode_cache",
    "ImageProbe": "probe",
    "probe_image": "probe",
    # reading and datasets
    "ImageReadError": "io",
    "read_image": "io",
    "read_mask": "io",
    "write_image": "io",
    "display_path": "io",
    "CODDataset": "cod",
    "ImageFolderDataset": "cod",
    "expand_inputs": "cod",
    "non_image_files": "cod",
    "split_train_val": "cod",
    "worker_init_fn": "workers",
    "seed_transform": "workers",
    # transforms
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "build_train_transform": "transforms",
    "build_eval_transform": "transforms",
    # synthetic data and benchmark
    "write_synthetic_dataset": "synthetic",
    "ensure_synthetic_dataset": "synthetic_cache",
    "benchmark_data_pipeline": "benchmark",
    # types shared with engine (datasets must not import engine, so the alias lives here)
    "PathLike": "_types",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see ordinary imports
    from ._types import PathLike
    from .benchmark import benchmark_data_pipeline
    from .decode_cache import DecodeCache
    from .cod import CODDataset, ImageFolderDataset, expand_inputs, non_image_files, split_train_val
    from .io import ImageReadError, display_path, read_image, read_mask, write_image
    from .cod10k_names import Cod10kCategory, parse_cod10k_category
    from .image_folders import IMAGE_EXTENSIONS, DatasetLayoutError, UnusableEntry
    from .layouts import SYNTHETIC_NAME, discover_dataset, discover_pairs
    from .splits import DatasetSplits, SampleRef, combine
    from .probe import ImageProbe, probe_image
    from .synthetic import write_synthetic_dataset
    from .synthetic_cache import ensure_synthetic_dataset
    from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, build_train_transform
    from .validation import UnpairedFiles, check_splits, validate_samples, validate_splits
    from .validation_report import DatasetValidationError, Problem, ValidationReport
    from .workers import seed_transform, worker_init_fn
