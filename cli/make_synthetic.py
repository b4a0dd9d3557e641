"""``train_ultimate.py make-synthetic``: write the built-in synthetic camouflage set to a folder."""
from __future__ import annotations

from typing import Optional

import click

__all__ = ["make_synthetic"]


def _synthetic_defaults() -> dict:
    from engine.config import load_default_config

    return load_default_config()["data"]["synthetic"]


@click.command("make-synthetic", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--train", "n_train", type=click.IntRange(min=0), default=None, help="Training scenes [240].")
@click.option("--test", "n_test", type=click.IntRange(min=0), default=None, help="Test scenes [40].")
@click.option("--img-size", type=click.IntRange(min=16), default=None, help="Scene size in pixels [160].")
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
    click.echo(f"Wrote {n_train} training and {n_test} test scenes ({img_size}px) to {root}")
