"""How fast ``predict`` turns a folder of images into mask files, and where its start-up goes.

Three figures, because a Python process cannot start torch and CUDA in under a couple of seconds:

* ``in_process``: inside one process, model loaded and warmed up, from the first file read to
  the last mask file written (:func:`engine.inference.predict.write_masks`, the code ``predict``
  runs), over the whole folder; the median of ``repeats`` runs.
* ``startup``: what comes before that in a fresh ``predict`` process: imports and CUDA start-up
  (timed in a child process), checkpoint load and model build, warm-up (cuDNN autotuning and
  CUDA-graph capture).
* ``fresh_process``: ``python train_ultimate.py predict`` over the folder as a new process,
  launch to exit.

Plus ``api_latency_b1_ms``: one decoded image through :class:`engine.inference.api.Segmenter`.
Imports the data stack (OpenCV, albumentations) only when called.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

__all__ = [
    "ROOT",
    "PredictBenchSettings",
    "format_predict_report",
    "run_predict_benchmark",
    "startup_seconds",
    "write_test_images",
]

#: The project root (where ``train_ultimate.py`` is).
ROOT = Path(__file__).resolve().parents[1]


def write_test_images(folder: Path, count: int, px: int, seed: int = 0) -> List[Path]:
    """``count`` JPEGs of ``px`` x ``px`` (quality 90): blurred colour noise with an ellipse.

    Each image is shifted and its ellipse turned, so no two files are the same.
    """
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (px, px, 3), dtype=np.uint8), (0, 0), px / 60)

    def one(i: int) -> Path:
        im = np.roll(base, shift=(i * 7) % px, axis=1).copy()
        cv2.ellipse(im, (px // 2, px // 2), (px // 5, px // 7), i % 180, 0, 360, (90, 160, 60), -1)
        path = folder / f"img_{i:05d}.jpg"
        if not cv2.imwrite(str(path), im, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"Could not write {path}.")
        return path

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # imwrite releases the GIL
        return list(pool.map(one, range(count)))


_STARTUP_CODE = """
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import cli.predict, engine.inference.predict
t2 = time.perf_counter()
device = torch.device(sys.argv[1])
if device.type == "cuda":
    torch.cuda.init()
    torch.empty(1, device=device)
    torch.cuda.synchronize(device)
t3 = time.perf_counter()
print(json.dumps({"import_torch_s": t1 - t0, "import_project_s": t2 - t1, "cuda_init_s": t3 - t2}))
"""


def startup_seconds(device: torch.device) -> Dict[str, float]:
    """Seconds a fresh process spends importing torch, importing ``predict``'s modules and starting CUDA."""
    proc = subprocess.run([sys.executable, "-c", _STARTUP_CODE, str(device)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Start-up probe failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fresh_predict(checkpoint: Path, folder: Path, out: Path, device: torch.device, st: PredictBenchSettings) -> float:
    # The process runs in ROOT, not in the caller's folder: relative paths would name other files there.
    checkpoint, folder, out = (Path(p).resolve() for p in (checkpoint, folder, out))
    cmd = [sys.executable, str(ROOT / "train_ultimate.py"), "predict", "--checkpoint", str(checkpoint),
           "--input", str(folder), "--output", str(out), "--device", str(device), "--batch-size", str(st.batch_size),
           "--precision", st.precision, "--no-progress", "--img-size", str(st.img_size)]
    if st.num_workers is not None:
        cmd += ["--num-workers", str(st.num_workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        # Its last error line says why: click's "Error: ..." or a traceback's "ValueError: ...";
        # warnings printed at exit may follow it.
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if re.match(r"\w*(Error|Exception)\b", line)]
        raise RuntimeError(f"`predict` as a fresh process failed (exit code {proc.returncode}): "
                           f"{(errors or lines or ['no output'])[-1]}")
    return elapsed


def _api_latency(checkpoint: Path, image_path: Path, device: torch.device,
                 st: PredictBenchSettings) -> Dict[str, float]:
    from engine.inference.api import Segmenter, to_rgb_array

    seg = Segmenter(checkpoint, device=str(device), precision=st.precision, img_size=st.img_size, batch_size=1)
    image = to_rgb_array(image_path)
    for _ in range(10):  # warm-up: cuDNN autotuning, CUDA-graph capture
        seg.predict(image)
    times = []
    for _ in range(st.latency_iters):
        t0 = time.perf_counter()
        seg.predict(image)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median": statistics.median(times), "min": min(times)}


def _random_checkpoint(path: Path, img_size: int, model_overrides: Optional[dict]) -> Path:
    from engine.checkpoint import save_checkpoint
    from models import build_model

    model = build_model(**(model_overrides or {}))
    return save_checkpoint({"model_config": model.config.to_dict(), "model": model.state_dict(), "ema": None,
                            "config": {"data": {"img_size": img_size}}}, path)


@dataclass
class PredictBenchSettings:
    """What :func:`run_predict_benchmark` times.

    Attributes:
        checkpoint: a trained checkpoint; None saves a randomly initialised model built with
            ``model_overrides`` (speed does not depend on the weights).
        folder: images to predict; None writes ``num_images`` JPEGs of ``image_px`` pixels.
        num_images: images written when ``folder`` is None.
        image_px: their side in pixels.
        img_size: network input size.
        batch_size: images per forward pass.
        num_workers: decoding processes (None: ``predict``'s default for the device).
        precision: autocast policy.
        repeats: timed in-process runs (median kept).
        latency_iters: timed batch-1 API calls.
        fresh_process: also time ``predict`` as a new process.
        model_overrides: model config of the random checkpoint.
    """

    checkpoint: Optional[Path] = None
    folder: Optional[Path] = None
    num_images: int = 1000
    image_px: int = 800
    img_size: int = 384
    batch_size: int = 32
    num_workers: Optional[int] = None
    precision: str = "auto"
    repeats: int = 3
    latency_iters: int = 50
    fresh_process: bool = True
    model_overrides: Optional[dict] = None


def run_predict_benchmark(device: torch.device, settings: PredictBenchSettings,
                          progress: Callable[[str], None] = lambda msg: None) -> Dict[str, Any]:
    """The whole predict benchmark; returns a JSON-able dict (see the module docstring).

    Args:
        device: where to run.
        settings: what to time.
        progress: where status lines go.

    Raises:
        FileNotFoundError: no such checkpoint or folder, or no image in it (before any timing).
        RuntimeError: a run wrote fewer masks than images, or the ``predict`` process failed (the
            message quotes its last error line).
    """
    from datasets import expand_inputs, read_image
    from engine.inference.predictor import default_num_workers
    from engine.inference.writer import default_writer_threads

    st = settings
    if st.checkpoint is not None and not Path(st.checkpoint).is_file():
        raise FileNotFoundError(f"Checkpoint not found: {st.checkpoint}")
    if st.folder is not None and not Path(st.folder).is_dir():
        raise FileNotFoundError(f"Image folder not found: {st.folder}")
    workers = default_num_workers(device) if st.num_workers is None else int(st.num_workers)
    with tempfile.TemporaryDirectory(prefix="camoxpert-predict-bench-") as tmp:
        tmp_path = Path(tmp)
        checkpoint = st.checkpoint or _random_checkpoint(tmp_path / "random.pt", st.img_size, st.model_overrides)
        folder = st.folder
        if folder is None:
            progress(f"writing {st.num_images} JPEGs of {st.image_px} px")
            folder = tmp_path / "images"
            write_test_images(folder, st.num_images, st.image_px)
        paths = expand_inputs([folder])
        progress("start-up of a fresh process (imports, CUDA)")
        startup: Dict[str, float] = dict(startup_seconds(device))
        progress("in-process predict: load, warm up, timed runs")
        in_process, fresh = _in_process(Path(checkpoint), paths, device, st, workers, tmp_path, startup), None
        if st.fresh_process:
            progress("predict as a fresh process")
            seconds = _fresh_predict(Path(checkpoint), folder, tmp_path / "masks_fresh", device, st)
            fresh = {"seconds": seconds, "img_per_s": len(paths) / seconds}
        progress("batch-1 latency through the Python API")
        latency = _api_latency(Path(checkpoint), paths[0], device, st)
        shape = list(read_image(paths[0]).shape[:2])
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "images": len(paths),
        "image_shape": shape,
        "img_size": st.img_size,
        "batch_size": st.batch_size,
        "num_workers": workers,
        "writer_threads": default_writer_threads(),
        "precision": st.precision,
        "in_process": in_process,
        "startup": startup,
        "fresh_process": fresh,
        "api_latency_b1_ms": latency,
    }


def _in_process(checkpoint: Path, paths: List[Path], device: torch.device, st: PredictBenchSettings, workers: int,
                tmp_path: Path, startup: Dict[str, float]) -> Dict[str, Any]:
    """Load, warm up (both added to ``startup``), then time ``st.repeats`` runs of ``predict``'s folder path."""
    from engine.inference.predict import write_masks
    from engine.inference.predictor import Predictor, load_inference_model

    if device.type == "cuda":
        torch.cuda.init()
        torch.empty(1, device=device)
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    loaded = load_inference_model(checkpoint, device, st.img_size)
    predictor = Predictor(loaded.model, device, precision=st.precision)
    t1 = time.perf_counter()
    predictor.warm_up(min(st.batch_size, len(paths)), loaded.img_size)
    t2 = time.perf_counter()
    startup.update(model_load_s=t1 - t0, warm_up_s=t2 - t1)
    startup["total_s"] = sum(startup.values())
    runs: List[float] = []
    for r in range(max(1, st.repeats)):
        out = tmp_path / f"masks_{r}"
        out.mkdir()
        t_start = time.perf_counter()
        summary = write_masks(predictor, paths, out, loaded.img_size, batch_size=st.batch_size,
                              num_workers=workers, progress=False)
        runs.append(time.perf_counter() - t_start)
        written = len(list(out.glob("*.png")))
        if written != len(paths) or summary.failed:
            raise RuntimeError(f"Run {r}: {written} masks for {len(paths)} images; failed: {summary.failed[:3]}")
    return {"runs_s": runs, "seconds": statistics.median(runs), "img_per_s": len(paths) / statistics.median(runs)}


def format_predict_report(r: dict) -> str:
    """A few readable lines of a :func:`run_predict_benchmark` result."""
    s, p = r["startup"], r["in_process"]
    lines = [
        f"predict over {r['images']} images of {r['image_shape'][0]}x{r['image_shape'][1]} at {r['img_size']} px, "
        f"batch {r['batch_size']}, {r['num_workers']} workers, {r['writer_threads']} writer threads "
        f"on {r['gpu'] or r['device']}:",
        f"  in one process, first file read to last mask written: {p['img_per_s']:.0f} img/s "
        f"({p['seconds']:.2f} s, median of {len(p['runs_s'])})",
        f"  start-up: import torch {s['import_torch_s']:.1f} s, project {s['import_project_s']:.1f} s, "
        f"CUDA {s['cuda_init_s']:.1f} s, model load {s['model_load_s']:.1f} s, warm-up {s['warm_up_s']:.1f} s "
        f"(total {s['total_s']:.1f} s)",
    ]
    if r.get("fresh_process"):
        f = r["fresh_process"]
        lines.append(f"  whole command as a fresh process: {f['seconds']:.1f} s ({f['img_per_s']:.0f} img/s)")
    lat = r["api_latency_b1_ms"]
    lines.append(f"  API batch-1 latency: median {lat['median']:.2f} ms (min {lat['min']:.2f} ms)")
    return "\n".join(lines)
