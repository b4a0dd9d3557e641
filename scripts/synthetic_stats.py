"""Statistics of a camouflage data set: object area, empty masks, border contact, object/surround colour.

Works on any set the project can discover (the built-in synthetic set, COD10K-v3, CAMO...),
so the synthetic scenes can be compared with real data:

    python scripts/synthetic_stats.py                      # the default built-in set (generated if needed)
    python scripts/synthetic_stats.py --dataset-path data/COD10K-v3
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional

import click
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["mask_stats", "main"]


def mask_stats(image: np.ndarray, mask: np.ndarray, ring_px: int) -> Dict[str, float]:
    """Area fraction, border contact and the object-vs-surround colour distance of one sample.

    Args:
        image: BGR uint8 ``(H, W, 3)``.
        mask: uint8 ``(H, W)``; > 127 is object.
        ring_px: Width of the surround ring outside the object.

    Returns:
        ``area`` (fraction of the image), ``touches`` (0/1), ``delta_e`` (CIE76 distance of the mean
        Lab colours inside the object and in the ring; NaN for empty masks).
    """
    obj = mask > 127
    area = float(obj.mean())
    if not obj.any():
        return {"area": 0.0, "touches": 0.0, "delta_e": float("nan")}
    touches = float(obj[0].any() or obj[-1].any() or obj[:, 0].any() or obj[:, -1].any())
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1, 2 * ring_px + 1))
    ring = (cv2.dilate(obj.astype(np.uint8), kernel) > 0) & ~obj
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)  # L 0..100, a/b about -128..127
    delta = lab[obj].mean(0) - lab[ring].mean(0) if ring.any() else np.full(3, np.nan)
    return {"area": area, "touches": touches, "delta_e": float(np.linalg.norm(delta))}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset-path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Dataset folder [the built-in synthetic set of configs/default.yaml].")
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="all", help="Samples to measure [all].")
def main(dataset_path: Optional[str], split: str) -> None:
    """Print object-area percentiles, the share of empty masks and the object/surround colour distance."""
    from datasets import discover_dataset, ensure_synthetic_dataset
    from engine.config import load_default_config

    if dataset_path is None:
        syn = load_default_config()["data"]["synthetic"]
        root = ensure_synthetic_dataset(cache_dir=syn["cache_dir"], n_train=syn["n_train"], n_test=syn["n_test"],
                                        img_size=syn["img_size"], seed=syn["seed"],
                                        noncam_fraction=syn["noncam_fraction"])
    else:
        root = Path(dataset_path)
    splits = discover_dataset(root)
    samples: List = []
    if split in ("train", "all"):
        samples += list(splits.train)
    if split in ("test", "all"):
        samples += [s for tests in splits.tests.values() for s in tests]
    if not samples:
        raise click.ClickException(f"{root}: no {split} samples found.")
    rows = []
    for sample in samples:
        image = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None:
            raise click.ClickException(f"{sample.image}: unreadable image or mask {sample.mask}.")
        if mask.shape != image.shape[:2]:
            mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        rows.append(mask_stats(image, mask, ring_px=max(3, round(min(mask.shape) / 40))))

    areas = np.array([r["area"] for r in rows])
    full = areas > 0
    delta_e = np.array([r["delta_e"] for r in rows if r["area"] > 0])
    delta_e = delta_e[np.isfinite(delta_e)]
    click.echo(f"{root}: {len(rows)} samples ({split})")
    click.echo(f"  empty masks: {100 * (1 - full.mean()):.1f}%")
    if full.any():
        pct = np.percentile(areas[full] * 100, [5, 25, 50, 75, 95])
        click.echo("  object area, % of image (p5/p25/p50/p75/p95): " + " / ".join(f"{p:.1f}" for p in pct))
        click.echo(f"  area < 1%: {100 * (areas[full] < 0.01).mean():.1f}%   1-20%: "
                   f"{100 * ((areas[full] >= 0.01) & (areas[full] <= 0.2)).mean():.1f}%   "
                   f"> 20%: {100 * (areas[full] > 0.2).mean():.1f}%")
        click.echo(f"  touching the border: {100 * np.mean([r['touches'] for r in rows if r['area'] > 0]):.1f}%")
    if delta_e.size:
        click.echo(f"  object vs surround ring, mean Lab distance (CIE76): mean {delta_e.mean():.1f}, "
                   f"median {np.median(delta_e):.1f}")


if __name__ == "__main__":
    main()
