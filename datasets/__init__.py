"""COD data pipeline: dataset discovery, validation, loading, augmentation, synthetic scenes.

Typical use::

    from datasets import (discover_dataset, combine, validate_splits, split_train_val,
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
"""

from .cod import CODDataset, ImageFolderDataset, expand_inputs, split_train_val
from .io import ImageReadError, read_image, read_mask
from .layouts import (
    IMAGE_EXTENSIONS,
    Cod10kCategory,
    DatasetLayoutError,
    DatasetSplits,
    SampleRef,
    combine,
    discover_dataset,
    discover_pairs,
    parse_cod10k_category,
)
from .probe import ImageProbe, probe_image
from .synthetic import ensure_synthetic_dataset, write_synthetic_dataset
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, build_train_transform
from .validation import (
    DatasetValidationError,
    Problem,
    ValidationReport,
    check_splits,
    validate_samples,
    validate_splits,
)
from .workers import worker_init_fn

__all__ = [
    # layouts
    "IMAGE_EXTENSIONS",
    "Cod10kCategory",
    "SampleRef",
    "DatasetSplits",
    "DatasetLayoutError",
    "parse_cod10k_category",
    "discover_dataset",
    "discover_pairs",
    "combine",
    # validation
    "Problem",
    "ValidationReport",
    "DatasetValidationError",
    "validate_samples",
    "validate_splits",
    "check_splits",
    "ImageProbe",
    "probe_image",
    # reading and datasets
    "ImageReadError",
    "read_image",
    "read_mask",
    "CODDataset",
    "ImageFolderDataset",
    "expand_inputs",
    "split_train_val",
    "worker_init_fn",
    # transforms
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_train_transform",
    "build_eval_transform",
    # synthetic data
    "write_synthetic_dataset",
    "ensure_synthetic_dataset",
]
