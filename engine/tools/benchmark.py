"""Speed and memory benchmark: the full model against its own backbone, measured in one run.

Imports only torch and the model code (no data or metric stack), so it runs on a bare GPU
image. Timings use CUDA events on GPUs (host clock on CPU), after warm-up, as medians of
repeats.
"""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.compile import compile_model
from engine.inference.cuda_graph import CudaGraphInference
from engine.runtime import autocast_context as _autocast
from engine.tools.timing import measure, measure_interleaved, peak_mb, quartiles, time_once
from engine.training.graphed_step import CUDAGraphStep, capturable_adamw
from engine.training.step import StepParts, update_weights
from models import build_backbone, build_model, count_parameters, set_attention_backend
from models.attention import ATTENTION_BACKENDS, FUSED_SDPA_KERNELS, math_attention, sdpa_kernel_context
from models.sdpa_probe import probe_sdpa_kernels

__all__ = [
    "BenchmarkSettings",
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


def benchmark_loss(output) -> torch.Tensor:
    """A training loss over everything a forward returns (model output or backbone features)."""
    if isinstance(output, (list, tuple)) and not hasattr(output, "logits"):
        return sum(f.float().mean() for f in output)
    target = torch.zeros_like(output.logits)
    loss = F.binary_cross_entropy_with_logits(output.logits.float(), target)
    for side in output.side_logits:  # side maps are smaller than the input
        loss = loss + F.binary_cross_entropy_with_logits(side.float(), torch.zeros_like(side, dtype=torch.float32))
    return loss + 0.01 * output.aux_loss


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
        return peak_mb(self.device)


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
            first_calls[name][key] = time_once(getattr(w, method), w.device)
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
    reference = samples.get(reference_name)
    out = {}
    for name, w in workloads.items():
        med = _summary(w, samples[name], None if name == reference_name else reference)
        med["peak_train_mem_mb"] = peaks[name]
        med.update(first_calls[name])
        if capture_errors.get(name):
            med["cuda_graph_error"] = capture_errors[name]
        out[name] = med
    return out


def _summary(w: Workload, samples: Dict[str, List[float]],
             reference: Optional[Dict[str, List[float]]]) -> Dict[str, object]:
    """Medians of one workload's samples, its images per second and its paired ratios to ``reference``."""
    med: Dict[str, object] = {m: statistics.median(v) for m, v in samples.items()}
    if reference is not None:
        # Speed ratio of each matched pair (reference time / this time): its spread shows how
        # far the host moved the ratio during the run.
        med["paired_ratio_to_reference"] = {
            m: quartiles([ref / own for ref, own in zip(reference[m], v)]) for m, v in samples.items()
        }
    for ms_key, rate_key in (("train_step_ms", "train_img_per_s"), ("infer_batch_ms", "infer_img_per_s"),
                             ("infer_batch_cuda_graph_ms", "infer_cuda_graph_img_per_s"),
                             ("train_step_cuda_graph_ms", "train_cuda_graph_img_per_s")):
        if ms_key in med:
            med[rate_key] = w.batch_size / med[ms_key] * 1e3
    return med


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
            results[name] = {"usable": True, "fwd_ms": f_ms, "fwd_bwd_ms": fb_ms, "peak_mem_mb": peak_mb(device)}
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


@dataclass
class BenchmarkSettings:
    """What :func:`run_benchmark` measures, and how.

    Attributes:
        backbone: timm EdgeNeXt name.
        batch_size: images per batch.
        img_size: side of the synthetic images.
        dtype: autocast dtype (None: fp32).
        warmup: untimed calls before each measurement.
        iters: timed calls per measurement and round.
        compile: torch.compile the model and the backbone.
        compile_mode: torch.compile mode.
        channels_last: NHWC weights and images.
        attention_backends: also time the model per attention backend and attention alone.
        rounds: alternating measurement rounds (medians kept).
        model_overrides: model config overrides.
    """

    backbone: str = "edgenext_small"
    batch_size: int = 16
    img_size: int = 384
    dtype: Optional[torch.dtype] = None
    warmup: int = 5
    iters: int = 20
    compile: bool = False
    compile_mode: str = "default"
    channels_last: bool = True
    attention_backends: bool = True
    rounds: int = 3
    model_overrides: Optional[dict] = None


def run_benchmark(device: torch.device, settings: BenchmarkSettings,
                  progress: Callable[[str], None] = lambda msg: None) -> Dict[str, object]:
    """The whole benchmark; returns a JSON-able dict (see the ``benchmark`` command)."""
    st = settings
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    result: Dict[str, object] = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "backbone": st.backbone,
        "batch_size": st.batch_size,
        "img_size": st.img_size,
        "dtype": str(st.dtype).replace("torch.", "") if st.dtype else "float32",
        "compile": st.compile_mode if st.compile else False,
        "channels_last": st.channels_last,
    }
    model = build_model(backbone=st.backbone, **(st.model_overrides or {}))
    result["model_config"] = model.config.to_dict()
    result["params"] = {"model": count_parameters(model), "backbone": count_parameters(model.backbone)}
    ref = build_backbone(st.backbone)

    def maybe_compile(m):
        return compile_model(m, st.compile_mode) if st.compile else m

    if st.compile:
        # Dynamo's explain, before anything is compiled: afterwards it re-traces next to the
        # compiled frames, which cost minutes on an H100 host.
        progress("graph breaks")
        x = torch.randn(2, 3, st.img_size, st.img_size, device=device)
        model.to(device)
        result["graph_breaks"] = {"train": graph_break_count(model.train(), x), "eval": graph_break_count(model.eval(), x)}

    progress("backbone alone vs full model (alternating rounds)")
    # Compiled, each module's loss is compiled too, as train compiles its loss with its model.
    workloads = {
        name: Workload(maybe_compile(m), device, st.batch_size, st.img_size, st.dtype, st.channels_last,
                       loss=maybe_compile(benchmark_loss))
        for name, m in (("backbone_alone", ref), ("model", model))
    }
    # Compiled modules are captured too (Inductor's default mode leaves graphs to the caller), as
    # train captures its compiled step; reduce-overhead mode brings its own graphs.
    graphs = st.compile_mode != "reduce-overhead" if st.compile else True
    result.update(compare_workloads(workloads, st.warmup, st.iters, st.rounds, cuda_graphs=graphs,
                                    batch1=not st.compile, progress=progress))
    del workloads
    _add_ratios(result)
    progress("ratio to backbone: " + ", ".join(f"{k} {v:.3f}" for k, v in result["ratio_to_backbone"].items()))
    if st.attention_backends:
        _add_attention_sections(result, model, device, st, progress)
    return result


def _add_ratios(result: Dict[str, object]) -> None:
    """The model's speed over the backbone's: per path, and the quartiles of the per-pair ratios."""
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


def _add_attention_sections(result: Dict[str, object], model: nn.Module, device: torch.device,
                            st: BenchmarkSettings, progress: Callable[[str], None]) -> None:
    """The model's inference speed per attention backend, then attention alone per kernel."""
    progress("attention backends in the model")
    per_backend = {}
    usable = probe_sdpa_kernels(device, st.dtype or torch.float32)
    eval_model = model.eval()
    x = torch.randn(st.batch_size, 3, st.img_size, st.img_size, device=device)
    for name in ATTENTION_BACKENDS:
        if name not in ("auto", "math") and not usable[name].usable:
            per_backend[name] = {"usable": False, "reason": usable[name].reason}
            continue
        set_attention_backend(eval_model, name)
        try:
            with torch.inference_mode(), _autocast(device, st.dtype):
                ms = measure(lambda: eval_model(x), device, st.warmup, st.iters)
            per_backend[name] = {"usable": True, "infer_batch_ms": ms, "infer_img_per_s": st.batch_size / ms * 1e3}
        except RuntimeError as exc:
            per_backend[name] = {"usable": False, "reason": str(exc).splitlines()[0][:160]}
    set_attention_backend(eval_model, "auto")
    result["model_attention_backends"] = per_backend
    progress("attention unit")
    unit_dtype = st.dtype or torch.float32
    shape = (16, 8, 576, 64) if device.type == "cuda" else (2, 8, 144, 64)
    result["attention_unit"] = {"shape": list(shape),
                                "results": benchmark_attention_unit(device, unit_dtype, shape, st.warmup, st.iters)}
