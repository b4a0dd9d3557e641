"""CUDA-graph replay against the eager model, on a GPU: forward passes, predict and evaluate.

    python benchmarks/check_cuda_graph.py --checkpoint checkpoints/best.pt
    python benchmarks/check_cuda_graph.py --json graph_check.json      # a random model

1. ``Predictor.probabilities`` with graphs against the same model run eagerly, on a sequence
   of batches chosen to exercise what can go wrong: a full batch (eager, then captured), a
   second input size (a second capture, whose ``empty_cache`` freed the first graph's weight
   copies before autocast's cache was turned off during capture), the first size again (replay
   of the first graph), smaller last batches (replayed in the first rows of the captured
   batch), and horizontal-flip TTA.
2. ``predict``'s folder path (:func:`engine.inference.predict.write_masks`) with and without
   graphs over images of several sizes whose count leaves a partial last batch.
3. ``evaluate`` with and without graphs over the same images with masks.

Prints one line per comparison and PASSED/FAILED; exits 1 on a failure. Probabilities may
differ in the last bits where a smaller batch replays a larger batch's kernels (cuDNN picks
per shape); the limits allow for that under bf16/fp16 and nothing more.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _write_test_set(root: Path, count: int, seed: int = 0) -> None:
    """COD10K-v3 layout (``Test/Image`` + ``Test/GT_Object``) with images of several sizes."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = [(480, 640), (600, 600), (375, 500), (512, 384)]
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (w // 2, h // 2), (w // 5, h // 6), (i * 17) % 180, 0, 360, 255, -1)
        image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 6)
        image[mask > 0] = (image[mask > 0] * 0.6 + np.array([40, 120, 60]) * 0.4).astype(np.uint8)
        name = f"COD10K-CAM-1-Aquatic-3-Flounder-{i:04d}"
        for sub, data, ext in (("Image", image, ".jpg"), ("GT_Object", mask, ".png")):
            (root / "Test" / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "Test" / sub / f"{name}{ext}"), data)


def _parse_args(argv) -> Tuple[argparse.Namespace, Any, dict, float]:
    """The options, the CUDA device, the model overrides and the probability limit; usage errors exit 2."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="Default: a random model of the default configuration.")
    p.add_argument("--device", default="cuda", help="cuda or cuda:N (the check needs a GPU).")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--img-size", type=int, default=384)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--images", type=int, default=45, help="Images of the predict/evaluate folder (45: last batch of 5).")
    p.add_argument("--max-prob-diff", type=float, default=None,
                   help="Largest allowed |graph - eager| probability (default 0.02 under autocast, 1e-4 in fp32).")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="Model config override for the random model, e.g. --set dim=16.")
    p.add_argument("--json", dest="json_out", type=Path)
    args = p.parse_args(argv)

    import torch

    from engine.config import parse_set_overrides
    from engine.runtime import autocast_dtype, check_device_name, resolve_device

    # Usage errors (exit 2) before any work. There is nothing to compare on the CPU (no graph is
    # captured there): a run without a GPU could only end in FAILED.
    try:
        check_device_name(args.device)
        overrides = parse_set_overrides(args.overrides)
    except ValueError as exc:
        p.error(str(exc))
    device = resolve_device(args.device) if torch.cuda.is_available() else None
    if device is None or device.type != "cuda":
        why = ": use --device cuda or cuda:N." if device else "; CUDA is not available on this machine/torch build."
        p.error(f"--device {args.device}: this check compares CUDA-graph replay with eager runs and needs a GPU{why}")
    limit = args.max_prob_diff
    if limit is None:
        limit = 1e-4 if autocast_dtype(device, args.precision) is None else 0.02
    return args, device, overrides, limit


class _Report:
    """The checks' results: printed one line each and kept for the JSON."""

    def __init__(self, device, precision: str, limit: float):
        import torch

        self.limit = limit
        self.failed = False
        self.data: Dict[str, Any] = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__,
                                     "precision": precision, "limit": limit, "checks": []}

    def record(self, name: str, diff: float, extra: str = "", ok=None) -> None:
        ok = diff <= self.limit if ok is None else ok
        self.failed |= not ok
        self.data["checks"].append({"name": name, "max_diff": diff, "ok": ok, "note": extra})
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max |graph - eager| {diff:.3g} {extra}", flush=True)


def _check_forward(loaded, device, args, report: _Report) -> None:
    """``Predictor.probabilities`` with graphs against eager over batches and sizes chosen to break it."""
    import torch

    from engine.inference.predictor import Predictor

    size, b = args.img_size, args.batch_size
    eager = Predictor(loaded.model, device, precision=args.precision, cuda_graphs=False)
    graphed = Predictor(loaded.model, device, precision=args.precision, cuda_graphs=True)
    graphed_tta = Predictor(loaded.model, device, hflip=True, precision=args.precision, cuda_graphs=True)
    eager_tta = Predictor(loaded.model, device, hflip=True, precision=args.precision, cuda_graphs=False)
    gen = torch.Generator().manual_seed(0)
    other = size - 64 if size >= 256 else size + 64  # a second input size
    plan = [(b, size), (b, size), (b, other), (b, other), (b, size), (3, size), (b, size),
            (5, other), (1, size), (b, size)]
    for step, (n, s) in enumerate(plan):
        x = torch.randn(n, 3, s, s, generator=gen).to(device)
        want = eager.probabilities(x).clone()
        got = graphed.probabilities(x).clone()
        report.record(f"forward step {step}: batch {n} at {s} px", (got - want).abs().max().item())
    for n in (b, b, b, 2):  # TTA: the flipped view reuses the same shape's graph within one batch
        x = torch.randn(n, 3, size, size, generator=gen).to(device)
        want, got = eager_tta.probabilities(x).clone(), graphed_tta.probabilities(x).clone()
        report.record(f"hflip TTA batch {n}", (got - want).abs().max().item())
    report.data["graphs_captured"] = graphed.graphs_captured
    # Two input sizes were fed repeatedly: without two graphs the checks above compared eager with eager.
    report.record("graphs captured", 0.0, f"({graphed.graphs_captured} of 2 expected; none on CPU)",
                  ok=graphed.graphs_captured == 2)


def _check_predict(loaded, device, args, images: List[Path], tmp: Path, report: _Report) -> None:
    """``predict``'s folder path with and without graphs: the mask files compared pixel by pixel."""
    import cv2
    import numpy as np

    from engine.inference.predict import write_masks
    from engine.inference.predictor import Predictor, default_num_workers

    b = args.batch_size
    outs = {}
    eager = Predictor(loaded.model, device, precision=args.precision, cuda_graphs=False)
    for name, pred in (("eager", eager), ("graphs", Predictor(loaded.model, device, precision=args.precision))):
        pred.warm_up(b, loaded.img_size)
        out = tmp / f"masks_{name}"
        out.mkdir()
        summary = write_masks(pred, images, out, loaded.img_size, batch_size=b,
                              num_workers=default_num_workers(device), progress=False)
        outs[name] = {pth.name: cv2.imread(str(pth), cv2.IMREAD_UNCHANGED) for pth in summary.masks}
    same_files = sorted(outs["eager"]) == sorted(outs["graphs"]) and len(outs["eager"]) == len(images)
    diffs = [np.abs(outs["eager"][k].astype(int) - outs["graphs"][k].astype(int)) for k in outs["eager"]]
    worst = max(float(d.max()) for d in diffs) / 255.0
    changed = sum(int((d > 0).sum()) for d in diffs) / sum(d.size for d in diffs)
    report.record(f"predict folder of {len(images)} (batch {b})", worst,
                  f"({changed:.2e} of pixels differ; all {len(images)} masks written: {same_files})",
                  ok=same_files and worst <= report.limit + 1 / 255)


def _check_evaluate(checkpoint: Path, device, args, root: Path, report: _Report) -> None:
    """``evaluate`` with and without graphs: the scores agree to 1e-3."""
    from engine.evaluation.evaluate import evaluate_checkpoint

    scores = {}
    for name, graphs in (("eager", False), ("graphs", True)):
        res = evaluate_checkpoint(checkpoint, [root], device=str(device), img_size=args.img_size,
                                  batch_size=args.batch_size, precision=args.precision, metric_workers=0,
                                  cuda_graphs=graphs, progress=False, log=lambda msg: None)
        scores[name] = {k: v for k, v in next(iter(res.values())).metrics.items() if isinstance(v, float)}
    worst = max(abs(scores["eager"][k] - scores["graphs"][k]) for k in scores["eager"])
    report.record("evaluate S/E/F/MAE", worst, f"(eager {scores['eager'].get('Sm', float('nan')):.4f} Sm, "
                                               f"graphs {scores['graphs'].get('Sm', float('nan')):.4f} Sm)",
                  ok=worst <= 1e-3)
    report.data["evaluate"] = scores


def main(argv=None) -> int:
    """Run every check; prints PASSED or FAILED, writes ``--json``; returns the exit code (1: a check failed)."""
    args, device, overrides, limit = _parse_args(argv)

    from engine.checkpoint import save_checkpoint
    from engine.files import atomic_write_text
    from engine.inference.predictor import load_inference_model
    from models import build_model

    report = _Report(device, args.precision, limit)
    with tempfile.TemporaryDirectory(prefix="camoxpert-graph-check-") as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint
        if checkpoint is None:
            model = build_model(**{"pretrained": False, **overrides})
            checkpoint = save_checkpoint({"model_config": model.config.to_dict(), "model": model.state_dict(),
                                          "ema": None, "config": {"data": {"img_size": args.img_size}}}, tmp / "random.pt")
        loaded = load_inference_model(checkpoint, device, args.img_size)
        _check_forward(loaded, device, args, report)
        _write_test_set(tmp / "set", args.images)
        images = sorted((tmp / "set" / "Test" / "Image").glob("*.jpg"))
        _check_predict(loaded, device, args, images, tmp, report)
        _check_evaluate(checkpoint, device, args, tmp / "set", report)

    print("PASSED" if not report.failed else "FAILED")
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(report.data, indent=2) + "\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
