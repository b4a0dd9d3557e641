"""End-to-end speed of ``predict`` and batch-1 latency of the Python API, as JSON.

    python scripts/benchmark_predict.py --checkpoint checkpoints/best.pt --json predict_bench.json
    python scripts/benchmark_predict.py --folder photos/ --device cuda --batch-size 32

Without ``--folder`` it writes ``--num-images`` JPEGs of ``--image-px`` pixels (textured scenes)
to a temporary folder. Without ``--checkpoint`` it saves a randomly initialised model of the
default configuration (speed does not depend on the weights).

* ``end_to_end``: ``python train_ultimate.py predict`` as a fresh process over the folder, timed
  from launch to exit (imports, model load, CUDA start-up and PNG writing included).
* ``steady_state``: the same command over the first ``--warm-images`` images is timed too; the
  difference of the two runs divides out start-up: ``(N - n) / (T_N - T_n)``.
* ``api_latency_b1``: median wall time of ``Segmenter.predict(image)`` on one image (decode
  excluded, preprocessing, forward, resize back and copy to host included).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_images(folder: Path, count: int, px: int, seed: int = 0) -> list:
    """``count`` JPEGs of ``px`` x ``px``: blurred colour noise with a brighter ellipse."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (px, px, 3), dtype=np.uint8), (0, 0), px / 60)
    paths = []
    for i in range(count):
        im = np.roll(base, shift=(i * 7) % px, axis=1).copy()
        cv2.ellipse(im, (px // 2, px // 2), (px // 5, px // 7), i % 180, 0, 360, (90, 160, 60), -1)
        path = folder / f"img_{i:05d}.jpg"
        cv2.imwrite(str(path), im, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def run_predict(checkpoint: Path, inputs: list, out: Path, args) -> float:
    """Seconds for one ``predict`` process over ``inputs`` (a folder or a list file's images)."""
    cmd = [sys.executable, str(ROOT / "train_ultimate.py"), "predict", "--checkpoint", str(checkpoint),
           "--output", str(out), "--device", args.device, "--batch-size", str(args.batch_size),
           "--precision", args.precision, "--no-progress", "--img-size", str(args.img_size)]
    for item in inputs:
        cmd += ["--input", str(item)]
    if args.num_workers is not None:
        cmd += ["--num-workers", str(args.num_workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--folder", type=Path, help="Images to predict (default: generated JPEGs).")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--image-px", type=int, default=800)
    p.add_argument("--warm-images", type=int, default=None, help="Images of the short run (default: 2 batches).")
    p.add_argument("--img-size", type=int, default=384)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--latency-iters", type=int, default=50)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="Model config override for the random checkpoint, e.g. --set backbone=edgenext_xx_small.")
    p.add_argument("--json", dest="json_out", type=Path)
    args = p.parse_args(argv)

    import torch
    import yaml

    from engine.checkpoint import save_checkpoint
    from engine.inference import Segmenter
    from engine.runtime import resolve_device
    from models import build_model

    with tempfile.TemporaryDirectory(prefix="camoxpert-bench-") as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint
        if checkpoint is None:
            overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)}
            model = build_model(**overrides)
            checkpoint = save_checkpoint({"model_config": model.config.to_dict(), "model": model.state_dict(),
                                          "ema": None, "config": {"data": {"img_size": args.img_size}}}, tmp / "random.pt")
        if args.folder is not None:
            from datasets import expand_inputs

            paths = expand_inputs([args.folder])
        else:
            paths = write_images(tmp / "images", args.num_images, args.image_px)
        warm = args.warm_images or min(len(paths) - 1, 2 * args.batch_size)
        warm_dir = tmp / "warm"
        warm_dir.mkdir()
        for path in paths[:warm]:  # the short run reads the same files, through a folder of links
            os.symlink(path.resolve(), warm_dir / path.name)
        full_inputs = [args.folder] if args.folder is not None else [tmp / "images"]
        t_full = run_predict(checkpoint, full_inputs, tmp / "out_full", args)
        t_warm = run_predict(checkpoint, [warm_dir], tmp / "out_warm", args)

        device = resolve_device(args.device)
        seg = Segmenter(checkpoint, device=str(device), precision=args.precision, img_size=args.img_size, batch_size=1)
        image = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
        for _ in range(10):  # warm-up: CUDA graph capture, cuDNN autotuning
            seg.predict(image)
        times = []
        for _ in range(args.latency_iters):
            t0 = time.perf_counter()
            seg.predict(image)
            times.append((time.perf_counter() - t0) * 1e3)

    n = len(paths)
    result = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "images": n,
        "image_shape": list(image.shape[:2]),
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "end_to_end": {"seconds": t_full, "img_per_s": n / t_full},
        "short_run": {"images": warm, "seconds": t_warm},
        "steady_state": {"img_per_s": (n - warm) / (t_full - t_warm) if t_full > t_warm else None},
        "api_latency_b1_ms": {"median": statistics.median(times), "min": min(times)},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
    return result


if __name__ == "__main__":
    main()
