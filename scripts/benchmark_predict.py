"""End-to-end speed of ``predict`` and batch-1 latency of the Python API, as JSON.

    python scripts/benchmark_predict.py --checkpoint checkpoints/best.pt --json predict_bench.json
    python scripts/benchmark_predict.py --folder photos/ --device cuda --batch-size 32

The same measurement as ``python train_ultimate.py benchmark --predict-only`` (both call
:func:`engine.tools.predict_speed.run_predict_benchmark`; see it for what each figure means).
Without ``--folder`` it writes ``--num-images`` JPEGs of ``--image-px`` pixels to a temporary
folder. Without ``--checkpoint`` it saves a randomly initialised model of the default
configuration (speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--folder", type=Path, help="Images to predict (default: generated JPEGs).")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--image-px", type=int, default=800)
    p.add_argument("--img-size", type=int, default=384)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--repeats", type=int, default=3, help="Timed in-process runs (median kept).")
    p.add_argument("--latency-iters", type=int, default=50)
    p.add_argument("--no-fresh-process", action="store_true", help="Skip timing predict as a new process.")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="Model config override for the random checkpoint, e.g. --set backbone=edgenext_xx_small.")
    p.add_argument("--json", dest="json_out", type=Path)
    args = p.parse_args(argv)

    import yaml

    from engine.runtime import resolve_device
    from engine.tools.predict_speed import run_predict_benchmark

    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    result = run_predict_benchmark(
        resolve_device(args.device), checkpoint=args.checkpoint, folder=args.folder, num_images=args.num_images,
        image_px=args.image_px, img_size=args.img_size, batch_size=args.batch_size, num_workers=args.num_workers,
        precision=args.precision, repeats=args.repeats, latency_iters=args.latency_iters,
        fresh_process=not args.no_fresh_process, model_overrides=overrides,
        progress=lambda msg: print(f"... {msg}", file=sys.stderr),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
    return result


if __name__ == "__main__":
    main()
