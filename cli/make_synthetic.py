"""``train_ultimate.py make-synthetic``: write the built-in synthetic camouflage set to a folder."""
from __future__ import annotations

from typing import Optional

import click

__all__ = ["make_synthetic"]


def _synthetic_defaults() -> dict:
    from engine.config import load_default_config

    return load_default_config()["data"]["synthetic"]


def _check_img_size(ctx: click.Context, param: click.Parameter, value: Optional[int]) -> Optional[int]:
    """--img-size over the generator's limit is a usage error naming it, before anything is created.

    Checked here rather than with click.IntRange(max=...) so that --help does not import the
    generator (OpenCV) for the constant.
    """
    from datasets.synthetic import MAX_IMG_SIZE

    if value is not None and value > MAX_IMG_SIZE:
        raise click.BadParameter(f"{value} px is over the limit of {MAX_IMG_SIZE} px (at {MAX_IMG_SIZE} px a "
                                 f"scene already takes about 1 GB of memory per worker).", ctx, param)
    return value


@click.command("make-synthetic", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out", type=click.Path(file_okay=False))
# Counts a usable set needs: train holds at least one of its training images out for validation,
# and evaluate needs a test image.
@click.option("--train", "n_train", type=click.IntRange(min=2), default=None,
              help="Training scenes, at least 2 (train holds some out for validation) [240].")
@click.option("--test", "n_test", type=click.IntRange(min=1), default=None, help="Test scenes, at least 1 [40].")
@click.option("--img-size", type=click.IntRange(min=16), default=None, callback=_check_img_size,
              help="Scene size in pixels, at least 16 [160].")
@click.option("--seed", type=int, default=None, help="Generator seed [0].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes drawing scenes [one per 64 images, at most one per core]; files do not depend on it.")
def make_synthetic(out: str, n_train: Optional[int], n_test: Optional[int], img_size: Optional[int],
                   seed: Optional[int], workers: Optional[int]) -> None:
    """Write synthetic camouflage scenes (COD10K-v3 layout: Train/ and Test/ with Image and GT_Object).

    The result works as --dataset-path for train and evaluate. Defaults come from the
    data.synthetic section of configs/default.yaml.
    """
    from datasets import write_synthetic_dataset

    defaults = _synthetic_defaults()
    n_train = defaults["n_train"] if n_train is None else n_train
    n_test = defaults["n_test"] if n_test is None else n_test
    img_size = defaults["img_size"] if img_size is None else img_size
    seed = defaults["seed"] if seed is None else seed
    try:
        root = write_synthetic_dataset(out, n_train=n_train, n_test=n_test, img_size=img_size, seed=seed,
                                       noncam_fraction=defaults["noncam_fraction"], workers=workers)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # cv2.error, MemoryError...: a message, never a traceback
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise click.ClickException(
            f"Drawing the scenes failed ({type(exc).__name__}: {reason}). What this command had written to {out} "
            f"was removed, so it can be run again."
        ) from exc
    click.echo(f"Wrote {n_train} training and {n_test} test scenes ({img_size}px) to {root}")
