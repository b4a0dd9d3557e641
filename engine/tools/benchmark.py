"""Speed and memory benchmark: the full model against its own backbone, measured in one run.

Imports only torch and the model code (no data or metric stack), so it runs on a bare GPU
image. Timings use CUDA events on GPUs (host clock on CPU), after warm-up, as medians of
repeats.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.compile import compile_model
from engine.inference.cuda_graph import CudaGraphInference
from engine.runtime import autocast_context as _autocast
from engine.training.graphed_step import CUDAGraphStep, capturable_adamw
from engine.training.step import StepParts, update_weights
from models import build_backbone, build_model, count_parameters, set_attention_backend
from models.attention import ATTENTION_BACKENDS, FUSED_SDPA_KERNELS, math_attention, sdpa_kernel_context
from models.sdpa_probe import probe_sdpa_kernels

__all__ = [
    "Workload",
    "benchmark_attention_unit",
    "benchmark_loss",
    "compare_workloads",
    "graph_break_count",
    "measure",
    "measure_interleaved",
    "quartiles",
    "run_benchmark",
]


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 5, iters: int = 20) -> float:
    """Median milliseconds of ``fn()`` over ``iters`` runs after ``warmup`` runs."""
    return statistics.median(measure_interleaved({"fn": fn}, device, warmup, iters)["fn"])


def _time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call of ``fn``: CUDA events around it on a GPU, the host clock on CPU."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def measure_interleaved(
    fns: Dict[str, Callable[[], object]], device: torch.device, warmup: int = 5, iters: int = 20
) -> Dict[str, List[float]]:
    """Milliseconds of every timed call of each ``fns[name]``, the functions interleaved call by call.

    Each of the ``iters`` passes times one call of every function, the order reversed from one
    pass to the next, so that the i-th samples of two functions are a matched pair taken a few
    milliseconds apart. Launch-bound workloads are timed mostly in host time, and a shared host
    drifts: on an H100 host the backbone's eager inference moved between 10.7 and 21.8 ms from
    one block of 30 calls to the next within a minute, and the model's ratio to it, taken block
    by block, between 0.53 and 0.74.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(iters):
        for name in names if i % 2 == 0 else reversed(names):
            samples[name].append(_time_call(fns[name], device))
    return samples


def quartiles(values: Sequence[float]) -> Dict[str, float]:
    """First quartile, median and third quartile of ``values``."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"q1": q1, "median": median, "q3": q3}


def benchmark_loss(output) -> torch.Tensor:
    """A training loss over everything a forward returns (model output or backbone features)."""
    if isinstance(output, (list, tuple)) and not hasattr(output, "logits"):
        return sum(f.float().mean() for f in output)
    target = torch.zeros_like(output.logits)
    loss = F.binary_cross_entropy_with_logits(output.logits.float(), target)
    for side in output.side_logits:  # side maps are smaller than the input
        loss = loss + F.binary_cross_entropy_with_logits(side.float(), torch.zeros_like(side, dtype=torch.float32))
    return loss + 0.01 * output.aux_loss


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``, waited for on the device."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _peak_mb(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


class Workload:
    """Training-step and inference closures for one module at one input size.

    Args:
        module: the model, or any module whose output ``loss`` reads.
        device: where it runs.
        batch_size: images of the synthetic batch.
        img_size: side of the synthetic images.
        dtype: autocast dtype (None: fp32).
        channels_last: NHWC weights and images.
        loss: a scalar loss of the module's output.
    """

    def __init__(self, module, device, batch_size, img_size, dtype, channels_last, loss=benchmark_loss):
        self.loss = loss
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(device, memory_format=self.memory_format)
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.x = torch.randn(batch_size, 3, img_size, img_size, device=device).to(memory_format=self.memory_format)
        self.x1 = self.x[:1].clone()
        params = [p for p in module.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
        # fp16 needs loss scaling; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        # The product's training step (engine.training.step) on a fixed synthetic batch; the loss
        # reads the output alone, so the mask is a placeholder.
        self.parts = StepParts(model=self.module, loss=lambda out, masks: {"loss": loss(out)}, optimizer=self.opt,
                               scaler=self.scaler, params=params, device=device, amp_dtype=dtype,
                               channels_last=channels_last)
        self.batch = {"image": self.x, "mask": torch.zeros((), device=device)}
        self.graph_b1: Optional[CudaGraphInference] = None
        self.graph_batch: Optional[CudaGraphInference] = None
        self.graph_train: Optional[CUDAGraphStep] = None

    def train_step(self):
        self.module.train()
        update_weights(self.parts, [self.batch])
        self.opt.zero_grad(set_to_none=True)

    def train_graph(self):
        """The training step replayed from one captured CUDA graph, as ``train`` runs it."""
        if self.graph_train is None:
            # Its own capturable AdamW (device-side step counters), as the trainer builds it.
            opt = capturable_adamw(self.parts.params, 1e-4, 0.01, self.device)
            parts = dataclasses.replace(self.parts, optimizer=opt)

            def body(x):
                self.module.train()
                return (update_weights(parts, [{"image": x, "mask": self.batch["mask"]}]),)

            self.graph_train = CUDAGraphStep(body, opt, [self.x], warmup_steps=3)
        return self.graph_train(self.x)

    def infer(self, x=None):
        self.module.eval()
        with torch.inference_mode(), _autocast(self.device, self.dtype):
            return self.module(self.x if x is None else x)

    def infer_b1(self):
        return self.infer(self.x1)

    def infer_b1_graph(self):
        if self.graph_b1 is None:
            self.module.eval()
            self.graph_b1 = CudaGraphInference(self.module, self.x1, self.dtype)
        return self.graph_b1(self.x1)

    def infer_graph(self):
        """Batched inference replayed from a captured graph (what predict and evaluate run)."""
        if self.graph_batch is None:
            self.module.eval()
            self.graph_batch = CudaGraphInference(self.module, self.x, self.dtype)
        return self.graph_batch(self.x)

    def can_capture(self, methods: Sequence[str]) -> Optional[str]:
        """None when the graphs of ``methods`` capture, else why not (e.g. a host copy inside)."""
        try:
            for method in methods:
                getattr(self, method)()
            return None
        except RuntimeError as exc:
            self.graph_b1 = self.graph_batch = self.graph_train = None
            torch.cuda.synchronize(self.device)
            return str(exc).splitlines()[0][:200]

    def peak_train_mb(self, steps: int = 3) -> Optional[float]:
        if self.device.type != "cuda":
            return None
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        for _ in range(steps):
            self.train_step()
        torch.cuda.synchronize(self.device)
        return _peak_mb(self.device)


def compare_workloads(
    workloads: Dict[str, "Workload"], warmup: int, iters: int, rounds: int = 3, cuda_graphs: bool = True,
    batch1: bool = True, progress: Callable[[str], None] = lambda msg: None,
    reference_name: str = "backbone_alone",
) -> Dict[str, Dict[str, Optional[float]]]:
    """Measure every workload's metrics, ``rounds`` times, and keep the medians of all calls.

    The workloads are interleaved call by call (:func:`measure_interleaved`), which keeps host,
    clock and thermal drift out of their ratio; each other workload also gets the quartiles of
    its per-pair speed ratio to ``reference_name`` (``paired_ratio_to_reference``). The first
    training step and the first batched inference of each workload are timed on their own
    (``first_train_step_s``, ``first_infer_s``): that is where compilation (with ``--compile``)
    and cuDNN's kernel search happen.

    Args:
        batch1: also measure batch-1 latency (off for compiled modules: a second input shape
            recompiles the whole model).
    """
    metrics = {"train_step_ms": "train_step", "infer_batch_ms": "infer"}
    if batch1:
        metrics["latency_b1_ms"] = "infer_b1"
    first = next(iter(workloads.values()))
    first_calls = {}
    for name, w in workloads.items():
        first_calls[name] = {}
        for key, method in (("first_train_step_s", "train_step"), ("first_infer_s", "infer")):
            progress(f"{name}: first {method.replace('_', ' ')} (compiles with --compile)")
            first_calls[name][key] = _time_once(getattr(w, method), w.device)
    graph_metrics = {"train_step_cuda_graph_ms": "train_graph", "infer_batch_cuda_graph_ms": "infer_graph"}
    if batch1:
        graph_metrics["latency_b1_cuda_graph_ms"] = "infer_b1_graph"
    if first.dtype == torch.float16:  # fp16 loss scaling decides on the host: train cannot replay it
        del graph_metrics["train_step_cuda_graph_ms"]
    capture_errors = {}
    if cuda_graphs and first.device.type == "cuda":
        capture_errors = {name: w.can_capture(list(graph_metrics.values())) for name, w in workloads.items()}
        if not any(capture_errors.values()):
            metrics.update(graph_metrics)
    samples = {name: {m: [] for m in metrics} for name in workloads}
    peaks = {name: w.peak_train_mb() for name, w in workloads.items()}
    for r in range(rounds):
        for metric, method in metrics.items():
            fns = {name: getattr(w, method) for name, w in workloads.items()}
            timed = measure_interleaved(fns, first.device, warmup if r == 0 else 2, iters)
            for name, values in timed.items():
                samples[name][metric].extend(values)
    out = {}
    reference = samples[reference_name] if reference_name in samples else None
    for name, w in workloads.items():
        med = {m: statistics.median(v) for m, v in samples[name].items()}
        if reference is not None and name != reference_name:
            # Speed ratio of each matched pair (reference time / this time): its spread shows how
            # far the host moved the ratio during the run.
            med["paired_ratio_to_reference"] = {
                m: quartiles([ref / own for ref, own in zip(reference[m], v)]) for m, v in samples[name].items()
            }
        med["train_img_per_s"] = w.batch_size / med["train_step_ms"] * 1e3
        med["infer_img_per_s"] = w.batch_size / med["infer_batch_ms"] * 1e3
        if "infer_batch_cuda_graph_ms" in med:
            med["infer_cuda_graph_img_per_s"] = w.batch_size / med["infer_batch_cuda_graph_ms"] * 1e3
        if "train_step_cuda_graph_ms" in med:
            med["train_cuda_graph_img_per_s"] = w.batch_size / med["train_step_cuda_graph_ms"] * 1e3
        med["peak_train_mem_mb"] = peaks[name]
        med.update(first_calls[name])
        if capture_errors.get(name):
            med["cuda_graph_error"] = capture_errors[name]
        out[name] = med
    return out


def benchmark_attention_unit(
    device: torch.device, dtype: torch.dtype, shape=(16, 8, 576, 64), warmup: int = 5, iters: int = 20
) -> Dict[str, Dict[str, object]]:
    """Forward and forward+backward ms of attention alone at ``shape`` (B, heads, N, head_dim).

    ``math`` is the model's explicit path; the others are SDPA pinned to one kernel.
    """
    results: Dict[str, Dict[str, object]] = {}
    usable = probe_sdpa_kernels(device, dtype, head_dim=shape[-1])
    q, k, v = (torch.randn(*shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    for name in ("explicit_math", "auto", *FUSED_SDPA_KERNELS):
        if name not in ("explicit_math", "auto") and not usable[name].usable:
            results[name] = {"usable": False, "reason": usable[name].reason}
            continue

        def fwd():
            if name == "explicit_math":
                return math_attention(q, k, v)
            with sdpa_kernel_context(name):
                return F.scaled_dot_product_attention(q, k, v)

        def fwd_bwd():
            fwd().sum().backward()

        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with torch.no_grad():
                f_ms = measure(fwd, device, warmup, iters)
            fb_ms = measure(fwd_bwd, device, warmup, iters)
            results[name] = {"usable": True, "fwd_ms": f_ms, "fwd_bwd_ms": fb_ms, "peak_mem_mb": _peak_mb(device)}
        except RuntimeError as exc:  # e.g. out of memory for explicit attention at large N
            results[name] = {"usable": False, "reason": str(exc).splitlines()[0][:160]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        q.grad = k.grad = v.grad = None
    base = results["explicit_math"]
    for name, r in results.items():
        if r.get("usable") and base.get("usable"):
            r["fwd_speedup_vs_math"] = base["fwd_ms"] / r["fwd_ms"]
            r["fwd_bwd_speedup_vs_math"] = base["fwd_bwd_ms"] / r["fwd_bwd_ms"]
    return results


def graph_break_count(model: nn.Module, x: torch.Tensor) -> int:
    """Graph breaks dynamo finds in ``model(x)`` (0 means one graph)."""
    import torch._dynamo

    torch._dynamo.reset()
    return int(torch._dynamo.explain(model)(x).graph_break_count)


def run_benchmark(
    device: torch.device,
    backbone: str = "edgenext_small",
    batch_size: int = 16,
    img_size: int = 384,
    dtype: Optional[torch.dtype] = None,
    warmup: int = 5,
    iters: int = 20,
    compile: bool = False,
    compile_mode: str = "default",
    channels_last: bool = True,
    attention_backends: bool = True,
    rounds: int = 3,
    model_overrides: Optional[dict] = None,
    progress: Callable[[str], None] = lambda msg: None,
) -> Dict[str, object]:
    """The whole benchmark; returns a JSON-able dict (see the ``benchmark`` command)."""
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    result: Dict[str, object] = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "backbone": backbone,
        "batch_size": batch_size,
        "img_size": img_size,
        "dtype": str(dtype).replace("torch.", "") if dtype else "float32",
        "compile": compile_mode if compile else False,
        "channels_last": channels_last,
    }
    model = build_model(backbone=backbone, **(model_overrides or {}))
    result["model_config"] = model.config.to_dict()
    result["params"] = {"model": count_parameters(model), "backbone": count_parameters(model.backbone)}
    ref = build_backbone(backbone)

    def maybe_compile(m):
        return compile_model(m, compile_mode) if compile else m

    if compile:
        # Dynamo's explain, before anything is compiled: afterwards it re-traces next to the
        # compiled frames, which cost minutes on an H100 host.
        progress("graph breaks")
        x = torch.randn(2, 3, img_size, img_size, device=device)
        model.to(device)
        result["graph_breaks"] = {"train": graph_break_count(model.train(), x), "eval": graph_break_count(model.eval(), x)}

    progress("backbone alone vs full model (alternating rounds)")
    # Compiled, each module's loss is compiled too, as train compiles its loss with its model.
    workloads = {
        name: Workload(maybe_compile(m), device, batch_size, img_size, dtype, channels_last,
                        loss=maybe_compile(benchmark_loss))
        for name, m in (("backbone_alone", ref), ("model", model))
    }
    # Compiled modules are captured too (Inductor's default mode leaves graphs to the caller), as
    # train captures its compiled step; reduce-overhead mode brings its own graphs.
    graphs = compile_mode != "reduce-overhead" if compile else True
    result.update(compare_workloads(workloads, warmup, iters, rounds, cuda_graphs=graphs, batch1=not compile,
                                    progress=progress))
    del workloads
    m, b = result["model"], result["backbone_alone"]
    result["ratio_to_backbone"] = {
        "train": m["train_img_per_s"] / b["train_img_per_s"],
        "inference": m["infer_img_per_s"] / b["infer_img_per_s"],
    }
    # The graph-replayed paths: train's step (train_cuda_graph), predict/evaluate/API (inference_cuda_graph).
    for key in ("train_cuda_graph", "infer_cuda_graph"):
        if f"{key}_img_per_s" in m and f"{key}_img_per_s" in b:
            name = key.replace("infer_", "inference_")
            result["ratio_to_backbone"][name] = m[f"{key}_img_per_s"] / b[f"{key}_img_per_s"]
    # Quartiles of the per-call-pair ratios: how far the host moved each ratio during the run.
    ratio_names = {"train_step_ms": "train", "infer_batch_ms": "inference",
                   "train_step_cuda_graph_ms": "train_cuda_graph", "infer_batch_cuda_graph_ms": "inference_cuda_graph"}
    paired = m.pop("paired_ratio_to_reference", {})
    result["ratio_to_backbone_quartiles"] = {ratio_names[k]: v for k, v in paired.items() if k in ratio_names}
    progress("ratio to backbone: " + ", ".join(f"{k} {v:.3f}" for k, v in result["ratio_to_backbone"].items()))

    if attention_backends:
        progress("attention backends in the model")
        per_backend = {}
        usable = probe_sdpa_kernels(device, dtype or torch.float32)
        eval_model = model.eval()
        x = torch.randn(batch_size, 3, img_size, img_size, device=device)
        for name in ATTENTION_BACKENDS:
            if name not in ("auto", "math") and not usable[name].usable:
                per_backend[name] = {"usable": False, "reason": usable[name].reason}
                continue
            set_attention_backend(eval_model, name)
            try:
                with torch.inference_mode(), _autocast(device, dtype):
                    ms = measure(lambda: eval_model(x), device, warmup, iters)
                per_backend[name] = {"usable": True, "infer_batch_ms": ms, "infer_img_per_s": batch_size / ms * 1e3}
            except RuntimeError as exc:
                per_backend[name] = {"usable": False, "reason": str(exc).splitlines()[0][:160]}
        set_attention_backend(eval_model, "auto")
        result["model_attention_backends"] = per_backend
        progress("attention unit")
        unit_dtype = dtype or torch.float32
        shape = (16, 8, 576, 64) if device.type == "cuda" else (2, 8, 144, 64)
        result["attention_unit"] = {"shape": list(shape), "results": benchmark_attention_unit(device, unit_dtype, shape, warmup, iters)}
    return result
