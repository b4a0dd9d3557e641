"""``train`` + ``evaluate`` against the bare training loop, at the same model and GPU seconds, as JSON.

    python benchmarks/run_vs_bare.py --dataset-path data/syn600 --device cuda --backbone edgenext_small \\
        --img-size 384 --batch-size 16 --seconds 120 --num-workers 12 --json run_vs_bare.json

In one session, on one device:

* ``benchmark``: the model's training step (:func:`engine.tools.benchmark.run_benchmark`, the
  ``benchmark`` command's measurement, one round, no attention sections): img/s.
* ``run``: ``python train_ultimate.py train ... --time-budget {seconds}s`` as a fresh process, timed
  from launch to exit by this script (so the interpreter's own shutdown counts), with the run's
  ``run_summary.json``; then ``evaluate`` on its ``best.pt`` over the test split.
* ``bare``: the quality benchmark's loop (:func:`benchmarks.quality.train_preloaded`: data decoded
  once onto the device, flips only, the same structure loss, AdamW, the step replayed from a
  CUDA graph unless ``--bare-eager``) for the same ``seconds`` on
  the whole train split, scored by :func:`benchmarks.quality.score_model` (PySODMetrics at
  ground-truth size, as ``evaluate``).

It prints and writes both S-measures and MAEs, ``sm_ratio`` (run / bare; the goal is >= 0.95)
``whole_run_vs_benchmark`` (the run's images per wall second, launch to exit, over the
benchmark's eager training-step img/s; the goal is >= 0.85) and ``whole_run_vs_bare_step`` (the
same over the bare loop's img/s, whose step is replayed from a CUDA graph as ``train``'s is:
what start-up, warm-up, validation and saving cost the run). ``train`` holds out
``data.val_fraction`` of the train split for model selection; the bare loop trains on all of it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-path", required=True, help="A data set with train and test splits (e.g. make-synthetic output).")
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbone", default="edgenext_small")
    p.add_argument("--img-size", type=int, default=384)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=120.0, help="GPU seconds for each of the two trainings.")
    p.add_argument("--num-workers", type=int, default=8, help="train's DataLoader workers.")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="runs/run_vs_bare", help="Where train writes its checkpoints.")
    p.add_argument("--json", default=None, help="Write the result here (default: OUT_DIR/run_vs_bare.json).")
    p.add_argument("--set", dest="set_items", action="append", default=[], metavar="KEY=VALUE",
                   help="Extra train --set overrides (repeatable); the model keys also apply to the bare loop.")
    p.add_argument("--bare-steps", type=int, default=0, help="Also stop the bare loop at this many steps (tests).")
    p.add_argument("--benchmark-iters", type=int, default=20)
    p.add_argument("--bare-eager", action="store_true",
                   help="Run the bare loop's step eagerly (by default it replays a CUDA graph on CUDA, as train "
                        "does with train.cuda_graphs: auto; use with --set train.cuda_graphs=false).")
    args = p.parse_args(argv)
    # The train and evaluate children run from the repository root: paths given relative to the
    # caller's folder must not change meaning there.
    args.dataset_path = str(Path(args.dataset_path).absolute())
    args.out_dir = str(Path(args.out_dir).absolute())
    return args


def _model_section(args: argparse.Namespace) -> Dict[str, Any]:
    """The model config ``train`` resolves from these options (defaults + --set model.*)."""
    from engine.config import resolve_config

    overrides = {"model.backbone": args.backbone, "model.pretrained": False, "data.img_size": args.img_size}
    config = resolve_config(None, overrides, args.set_items)
    return dict(config["model"]), dict(config["loss"])


def run_train(args: argparse.Namespace, out: Path) -> Dict[str, Any]:
    """``train`` with a time budget as a fresh process, timed launch to exit."""
    cmd = [sys.executable, str(ROOT / "train_ultimate.py"), "train", "--dataset-path", args.dataset_path,
           "--backbone", args.backbone, "--no-pretrained", "--img-size", str(args.img_size),
           "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers), "--device", args.device,
           "--precision", args.precision, "--seed", str(args.seed), "--time-budget", f"{args.seconds:g}s",
           "--checkpoint-dir", str(out), "--overwrite"]
    for item in args.set_items:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"train failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "run_summary.json").read_text())
    images = int(summary["images_trained"])
    return {"command": " ".join(cmd), "wall_s_launch_to_exit": round(wall, 2), "images_trained": images,
            "img_per_wall_s": round(images / wall, 2), "summary": summary,
            "after_summary_s": round(wall - summary["total_s"], 2)}


def run_evaluate(args: argparse.Namespace, out: Path) -> Dict[str, Any]:
    """``evaluate`` on the run's best.pt over the data set's test split."""
    scores = out / "test_scores.json"
    cmd = [sys.executable, str(ROOT / "train_ultimate.py"), "evaluate", "--checkpoint", str(out / "best.pt"),
           "--dataset-path", args.dataset_path, "--device", args.device, "--precision", args.precision,
           "--output-json", str(scores), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"evaluate failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(scores.read_text())
    name, best = next(iter(result.items()))  # the first (usually only) test set
    return {"test_set": name, **{k: best[k] for k in ("n", "Sm", "Em_mean", "wFm", "MAE")}}


def run_bare(args: argparse.Namespace, device, dtype, model_section, loss_section) -> Dict[str, Any]:
    """The quality benchmark's bare loop for ``seconds`` on the same data, then its test scores."""
    import torch

    from benchmarks.quality import QualitySettings, score_model, structure_loss, train_preloaded
    from benchmarks.quality_data import load_quality_data
    from engine.training.rng import seed_everything
    from models import CamoXpertConfig, build_model

    t0 = time.perf_counter()
    data = load_quality_data([args.dataset_path], args.img_size, device)
    load_s = time.perf_counter() - t0
    settings = QualitySettings(seconds=args.seconds, max_steps=args.bare_steps, batch_size=args.batch_size,
                               dtype=dtype, channels_last=device.type == "cuda", cuda_graphs=not args.bare_eager)
    seed_everything(args.seed)
    model = build_model(CamoXpertConfig.from_dict(model_section)).to(device)
    record = train_preloaded(model, data, settings, structure_loss(loss_section), args.seed)
    scores = score_model(model, data, settings)
    out = {"train_images": int(data.train_images.shape[0]), "test_images": int(data.test_images.shape[0]),
           "cuda_graph": record.cuda_graph, "steps": record.steps, "train_seconds": round(record.seconds, 2), "data_load_s": round(load_s, 2),
           "img_per_s": round(record.steps * args.batch_size / max(record.seconds, 1e-9), 1), **scores}
    del model, data
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def run_step_benchmark(args: argparse.Namespace, device, dtype, model_section) -> Dict[str, Any]:
    """``benchmark``'s training-step measurement of this model (one round, no attention sections)."""
    from engine.tools.benchmark import BenchmarkSettings, run_benchmark

    keys = ("num_experts", "top_k", "moe_levels", "decoder", "routing", "deep_supervision", "use_flash_attn")
    overrides = {k: model_section[k] for k in keys if k in model_section}
    settings = BenchmarkSettings(backbone=args.backbone, batch_size=args.batch_size, img_size=args.img_size, dtype=dtype,
                                 iters=args.benchmark_iters, rounds=1, attention_backends=False,
                                 model_overrides=overrides)
    r = run_benchmark(device, settings)
    return {"train_step_ms": round(r["model"]["train_step_ms"], 2),
            "train_img_per_s": round(r["model"]["train_img_per_s"], 1),
            "backbone_train_img_per_s": round(r["backbone_alone"]["train_img_per_s"], 1)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run the comparison; prints a summary and writes the JSON. Returns the result."""
    args = parse_args(argv)
    import torch

    from engine.runtime import autocast_dtype, resolve_device

    device = resolve_device(args.device)
    dtype = autocast_dtype(device, args.precision)
    model_section, loss_section = _model_section(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "torch": torch.__version__,
        "dataset": args.dataset_path, "backbone": args.backbone, "img_size": args.img_size,
        "batch_size": args.batch_size, "seconds": args.seconds, "set": args.set_items,
    }
    print(f"[1/4] benchmark: training step of {args.backbone} at {args.img_size}px, batch {args.batch_size}", flush=True)
    result["benchmark"] = run_step_benchmark(args, device, dtype, model_section)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"[2/4] train --time-budget {args.seconds:g}s (a fresh process)", flush=True)
    result["run"] = run_train(args, out / "train")
    print("[3/4] evaluate best.pt on the test split", flush=True)
    result["run"]["test"] = run_evaluate(args, out / "train")
    print(f"[4/4] bare loop for {args.seconds:g} s, data on the device", flush=True)
    result["bare"] = run_bare(args, device, dtype, model_section, loss_section)
    run_sm, bare_sm = result["run"]["test"]["Sm"], result["bare"]["Sm"]
    result["sm_ratio"] = round(run_sm / bare_sm, 4) if bare_sm else None
    result["whole_run_vs_benchmark"] = round(result["run"]["img_per_wall_s"] / result["benchmark"]["train_img_per_s"], 4)
    # against the bare loop's own step rate (graphed like train's by default): the run's overheads
    result["whole_run_vs_bare_step"] = round(result["run"]["img_per_wall_s"] / result["bare"]["img_per_s"], 4)
    path = Path(args.json) if args.json else out / "run_vs_bare.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    r, b, s = result["run"], result["bare"], result["run"]["summary"]
    print(f"train+evaluate: S {run_sm:.4f} MAE {r['test']['MAE']:.4f}; {r['images_trained']} images in "
          f"{r['wall_s_launch_to_exit']:.1f} s launch to exit = {r['img_per_wall_s']:.1f} img/s "
          f"(its summary: startup {s['startup_s']:.1f} s, validation {s['validation_s']:.1f} s, teardown "
          f"{s['teardown_s']:.1f} s; {r['after_summary_s']:.1f} s after the summary)")
    print(f"bare loop:      S {bare_sm:.4f} MAE {b['MAE']:.4f}; {b['steps']} steps, {b['img_per_s']:.1f} img/s")
    print(f"benchmark step: {result['benchmark']['train_img_per_s']:.1f} img/s")
    print(f"S ratio run/bare {result['sm_ratio']}, whole-run img/s / benchmark step img/s "
          f"{result['whole_run_vs_benchmark']}, / bare loop img/s {result['whole_run_vs_bare_step']}  -> {path}")
    return result


if __name__ == "__main__":
    main()
