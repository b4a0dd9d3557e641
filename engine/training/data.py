"""Training data for ``train``: find the images, check them, hold out validation, build datasets.

Validation images are held out from the TRAINING split of the given datasets (test sets are
never read here), so the checkpoint picked as ``best.pt`` has not seen a test image.

Augmentations are re-seeded per sample from ``(seed, epoch, index)``: what a sample looks like
in an epoch does not depend on which DataLoader worker loads it or on where a resumed run
restarted, which makes resumed runs reproduce uninterrupted ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping

from torch.utils.data import Dataset

from datasets import seed_transform
from engine.training.rng import derive_seed

if TYPE_CHECKING:  # loader workers import this module: they need no settings classes
    from engine.settings import DataSettings

__all__ = ["DataError", "SeededAugmentDataset", "TrainData", "build_train_data", "light_augment", "resolve_dataset_paths"]


class DataError(ValueError):
    """The training data cannot be used as given (missing path, too few samples)."""


class SeededAugmentDataset(Dataset):
    """Wraps a dataset whose ``transform`` is an albumentations pipeline; seeds it per sample.

    Items are looked up by plain index (the epoch set with :meth:`set_epoch`) or by an
    ``(epoch, index, light)`` key from :class:`~engine.training.loaders.RunBatchSampler`, which
    reaches persistent worker processes where :meth:`set_epoch` would not.

    Args:
        dataset: a :class:`datasets.CODDataset` (anything with ``transform`` and ``__getitem__``).
        seed: run seed.
        light_transform: the pipeline used for keys with ``light`` set (short runs); None: the
            full one.
    """

    def __init__(self, dataset: Dataset, seed: int, light_transform: Any = None):
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0
        self.full_transform = getattr(dataset, "transform", None)
        self.light_transform = light_transform

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> Dict[str, Any]:
        if isinstance(key, (tuple, list)):
            epoch, index, light = int(key[0]), int(key[1]), bool(key[2])
        else:
            epoch, index, light = self.epoch, int(key), False
        transform = self.light_transform if light and self.light_transform is not None else self.full_transform
        self.dataset.transform = transform
        seed_transform(transform, derive_seed(self.seed, epoch, index))
        return self.dataset[index]


@dataclass
class TrainData:
    """Datasets of one training run.

    Attributes:
        train_set: augmented training images (a :class:`SeededAugmentDataset`).
        val_set: held-out validation images at the eval transform.
        sources: dataset roots used (the synthetic set's cache folder when none was given).
        n_skipped: samples dropped by ``skip_bad_samples``.
        report: the validation report text ("" when there was nothing to report).
    """

    train_set: SeededAugmentDataset
    val_set: Dataset
    sources: List[Path]
    n_skipped: int = 0
    report: str = ""


def light_augment(augment: Mapping[str, Any]) -> Dict[str, Any]:
    """The augmentation of short runs: the configured flips only (crops, rotations and colour
    changes off), which a run of a few thousand steps learns from faster."""
    return {**augment, "crop_p": 0.0, "rotate_p": 0.0, "color_p": 0.0}


def resolve_dataset_paths(data_cfg: DataSettings, progress: bool = True) -> List[Path]:
    """The ``data.dataset_paths``, or the built-in synthetic set (generated and cached on first use).

    Raises:
        DataError: a given path does not exist.
    """
    paths = [Path(p).expanduser() for p in data_cfg.dataset_paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"--dataset-path not found: {', '.join(missing)}")
    if paths:
        return paths
    from datasets import ensure_synthetic_dataset

    syn = data_cfg.synthetic
    root = ensure_synthetic_dataset(
        cache_dir=syn.cache_dir,
        n_train=syn.n_train,
        n_test=syn.n_test,
        img_size=syn.img_size,
        seed=syn.seed,
        noncam_fraction=syn.noncam_fraction,
        progress=progress,
    )
    return [Path(root)]


@dataclass(frozen=True)
class _Checked:
    """The usable training samples and what the check found."""

    paths: List[Path]
    samples: List[Any]
    n_skipped: int
    report: str


def _usable_samples(data_cfg: DataSettings, log: Callable[[str], None], progress: bool) -> _Checked:
    """Find the training samples of every dataset path and check them (see :func:`build_train_data`)."""
    from datasets import DecodeCache, check_splits, combine, discover_dataset
    from datasets.leakage import leakage_warning

    paths = resolve_dataset_paths(data_cfg, progress=progress)
    found = [discover_dataset(p) for p in paths]
    for s in found:
        leak = leakage_warning(s)
        if leak:
            log(leak)
        if not s.split_declared:
            log(f"Data: {s.root} holds image/mask folders without a train/test split: all its "
                f"{len(s.train)} samples are training data (validation is held out of them), none is "
                f"used as a test set. Evaluate on a separate test set with `evaluate --dataset-path`.")
    # A pairs folder also lists its samples as a test set (for `evaluate`); training must not.
    splits = combine([s.for_training() for s in found])
    log(f"Data: {splits.summary()}")
    n_found = len(splits.train)
    skip_bad = data_cfg.skip_bad_samples
    # Only the training samples are checked (a damaged test image must not stop training), down
    # to their pixel data, except files unchanged since a previous run found them sound (the
    # decode cache). Raises DatasetValidationError (listing every problem) unless skip_bad.
    splits, report = check_splits(splits, skip_bad_samples=skip_bad, part="train", decode=True, progress=progress,
                                  decode_cache=DecodeCache.default())
    samples = list(splits.train)
    n_skipped = n_found - len(samples)
    if not report.ok:
        log(report.format(skipped=skip_bad))
    if n_skipped:
        log(f"--skip-bad-samples: skipped {n_skipped} bad training sample(s); training on {len(samples)}.")
    if len(samples) < 2:
        raise DataError(
            f"Only {len(samples)} usable training sample(s) in {', '.join(map(str, paths))}: need at least 2 "
            f"(one for training, one held out for validation)."
        )
    return _Checked(paths, samples, n_skipped, "" if report.ok else report.format(skipped=skip_bad))


def build_train_data(
    data_cfg: DataSettings,
    seed: int,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> TrainData:
    """Discover, check, split and wrap the training data.

    Args:
        data_cfg: the ``data`` settings.
        seed: run seed (augmentation draws).
        log: where to report what was found and skipped.
        progress: show progress bars (synthetic generation, checks).

    Raises:
        datasets.DatasetValidationError: unusable samples and ``skip_bad_samples`` is off; its
            message lists every problem.
        datasets.DatasetLayoutError: a path holds no understood layout.
        DataError: too few usable samples.
    """
    from datasets import CODDataset, build_eval_transform, build_train_transform, split_train_val

    checked = _usable_samples(data_cfg, log, progress)
    skip_bad = data_cfg.skip_bad_samples
    train, val = split_train_val(checked.samples, val_fraction=data_cfg.val_fraction, seed=data_cfg.split_seed)
    img_size = data_cfg.img_size
    cache = img_size if data_cfg.cache else None
    augment = data_cfg.augment.model_dump()  # tuples, as datasets.DEFAULT_TRAIN_AUG
    # With skip_bad a file that still fails to load mid-epoch (changed on disk, a decoder
    # failure the check could not see) is reported and replaced, instead of ending the run.
    # Training images leave the workers as uint8 and are normalised on the device
    # (engine.training.step.device_batch): a quarter of the bytes through the loader's queues
    # and the pin-memory copy, which kept graph-replayed steps waiting for data.
    train_ds = CODDataset(train, build_train_transform(img_size, augment, normalize=False),
                          cache_size=cache, skip_unreadable=skip_bad)
    light = build_train_transform(img_size, light_augment(augment), normalize=False)
    val_ds = CODDataset(val, build_eval_transform(img_size), cache_size=cache, skip_unreadable=skip_bad)
    log(f"Data: {len(train)} training and {len(val)} validation images (held out from training data).")
    return TrainData(SeededAugmentDataset(train_ds, seed, light), val_ds, checked.paths, checked.n_skipped,
                     checked.report)