"""Prove the attention switch on a trained checkpoint: every SDPA backend against explicit math.

The same images go through the model once per backend (weights untouched, only the attention
path switched with :func:`models.set_attention_backend`). Probability maps are compared with
the explicit-math reference, metric changes are computed against the ground truth, and the
kernel that actually ran is read from the profiler.

In half precision only the attention cores run in that dtype (:func:`attention_core_precision`):
with the whole model under bf16 autocast, a one-rounding difference in the attention output
flipped roundings all through the bf16 decoder, and trained checkpoints whose backends agreed to
within 1e-4 on average differed by 1e-2 to 3e-2 in their worst pixel, failing healthy kernels.
For the same reason the float32 parts run without TF32 (:func:`ieee_float32`).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import set_attention_backend
from models.attention import (
    FUSED_SDPA_KERNELS,
    SDTAEncoder,
    attention_backend_from_env,
    math_attention,
    sdpa_kernel_context,
)
from models.sdpa_probe import probe_sdpa_kernels

__all__ = [
    "DEFAULT_TOLERANCE",
    "attention_core_precision",
    "attention_routing",
    "SDPA_BACKENDS",
    "UNIT_SHAPES",
    "backends_to_check",
    "compare_backends",
    "ieee_float32",
    "kernel_from_profile",
    "unit_check",
]

SDPA_BACKENDS = ("auto", *FUSED_SDPA_KERNELS)
# Largest allowed |p_backend - p_math| on probability maps, per compute dtype. Fused kernels
# accumulate in a different order; in half precision that alone moves probabilities ~1e-3.
DEFAULT_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2, "fp16": 5e-3}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# (B, heads, tokens, head_dim): the default model's shape at 384 px and batch 16 first (the
# stride-32 map, 12x12 tokens; dim 64 in 4 heads of 16), then the earlier model's stride-16 shape
# and larger maps.
UNIT_SHAPES = ((16, 4, 144, 16), (16, 8, 576, 64), (4, 2, 1024, 16), (1, 8, 2304, 64))

# Profiler op names of each SDPA kernel (CUDA and CPU variants).
_KERNEL_OPS = (
    ("flash", ("aten::_scaled_dot_product_flash_attention", "aten::_flash_attention_forward")),
    ("efficient", ("aten::_scaled_dot_product_efficient_attention", "aten::_efficient_attention_forward")),
    ("cudnn", ("aten::_scaled_dot_product_cudnn_attention",)),
    ("math", ("aten::_scaled_dot_product_attention_math",)),
)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null while the block runs.

    The profiler's C++ side prints ``USDT: ... profiler_start/stop`` lines on stderr whatever its log
    level; they are noise in the check's report. Python's own ``sys.stderr`` is flushed first, and
    an exception raised in the block is reported after the descriptor is restored.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def kernel_from_profile(event_names: Sequence[str]) -> str:
    """Name the attention kernel that ran from profiler op names.

    Returns ``flash``, ``efficient``, ``cudnn``, ``math`` (SDPA's own math kernel), ``explicit``
    (no SDPA op at all: the model's reference path) or a ``+``-joined list when several ran.
    """
    names = set(event_names)
    found = [
        kernel
        for kernel, ops in _KERNEL_OPS
        if any(n == op or n.startswith(op + "_") for n in names for op in ops)
    ]
    return "+".join(found) if found else "explicit"


def backends_to_check(device: torch.device, dtype: torch.dtype) -> Tuple[List[str], Dict[str, str]]:
    """Backends to run here, and why the others are skipped.

    ``TORCH_SDPA_BACKEND`` is honoured: when it pins a kernel only that one is checked; when it
    is ``math`` there is nothing fused to check.
    """
    policy = attention_backend_from_env()
    usable = probe_sdpa_kernels(device, dtype)
    run, skipped = [], {}
    for name in SDPA_BACKENDS:
        if policy == "math":
            skipped[name] = "TORCH_SDPA_BACKEND=math forces explicit attention"
        elif policy != "auto" and name != policy:
            skipped[name] = f"TORCH_SDPA_BACKEND={policy} pins another kernel"
        elif name != "auto" and not usable[name].usable:
            skipped[name] = f"not usable here: {usable[name].reason}"
        else:
            run.append(name)
    return run, skipped


@contextlib.contextmanager
def attention_core_precision(model: nn.Module, device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Run the attention cores of ``model`` in ``dtype`` and the rest of it in float32.

    Every :class:`~models.attention.SDTAEncoder` is called under autocast, which it turns into
    q, k, v and the attention kernel in ``dtype`` (what the fused kernels need) with its own
    layers in float32; nothing else in the model runs under autocast. The differences between
    attention backends are then their kernels' own, not half-precision roundings downstream.
    A no-op for float32.
    """
    if dtype == torch.float32:
        yield
        return
    encoders = [m for m in model.modules() if isinstance(m, SDTAEncoder)]
    for encoder in encoders:
        # An instance attribute shadows the class's forward for this module's calls only.
        encoder.forward = _under_autocast(encoder.forward, device.type, dtype)
    try:
        yield
    finally:
        for encoder in encoders:
            del encoder.forward


def _under_autocast(forward, device_type: str, dtype: torch.dtype):
    def forward_under_autocast(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            return forward(*args, **kwargs)

    return forward_under_autocast


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """TF32 off for convolutions and matrix products inside the block, restored after.

    cuDNN runs float32 convolutions in TF32 (10 significant bits) by default: a difference of
    1e-6 in the attention output then flips TF32 roundings all through the decoder, and a
    trained checkpoint's efficient kernel differed from explicit math by 2.2e-4 in its worst
    pixel (H200, fp32, 100 images) with a mean difference of 3e-8.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_backend(model, batches, backend: str, device: torch.device, dtype: torch.dtype):
    """Probabilities (list of (1, H, W) CPU tensors), ms per batch, peak MB and kernel seen."""
    set_attention_backend(model, "math" if backend == "explicit_math" else backend)
    probs: List[torch.Tensor] = []
    with torch.inference_mode(), ieee_float32(), attention_core_precision(model, device, dtype):
        model(batches[0].to(device))  # warm-up: cuDNN autotuning and lazy init out of the timing
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        elapsed = 0.0
        for images in batches:
            images = images.to(device)
            _sync(device)
            t0 = time.perf_counter()
            logits = model(images)
            _sync(device)
            elapsed += time.perf_counter() - t0
            probs.extend(torch.sigmoid(logits.float()).cpu())
        activities = [torch.profiler.ProfilerActivity.CPU]
        with native_stderr_silenced(), torch.profiler.profile(activities=activities) as prof:
            model(batches[0].to(device))
    kernel = kernel_from_profile([e.key for e in prof.key_averages()])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return probs, elapsed * 1e3 / len(batches), peak, kernel


def compare_backends(
    model,
    batches: Sequence[torch.Tensor],
    gts: Optional[Sequence] = None,
    orig_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    device: torch.device = torch.device("cpu"),
    dtype_name: str = "fp32",
    tolerance: Optional[float] = None,
) -> dict:
    """Run every usable backend and the explicit-math reference; compare them.

    Args:
        model: a CamoXpert in eval mode on ``device``.
        batches: normalised image batches (B, 3, H, W).
        gts: ground-truth masks (H_i, W_i) uint8/float, one per image, for metric deltas.
        orig_sizes: GT sizes to resize probabilities to before scoring (default: GT shapes).
        device: compute device.
        dtype_name: ``fp32``, ``bf16`` or ``fp16``: the attention cores' dtype (the rest of the
            model runs in float32, see :func:`attention_core_precision`).
        tolerance: max abs difference allowed (default :data:`DEFAULT_TOLERANCE`).

    Returns:
        ``{"backends": {name: {...}}, "reference": {...}, "skipped": {...}, "tolerance", "dtype",
        "passed"}`` as documented by ``scripts/test_flash_attention.py``.
    """
    dtype = DTYPES[dtype_name]
    tolerance = DEFAULT_TOLERANCE[dtype_name] if tolerance is None else tolerance
    names, skipped = backends_to_check(device, dtype)
    ref_probs, ref_ms, ref_peak, ref_kernel = run_backend(model, batches, "explicit_math", device, dtype)
    ref_scores = _scores(ref_probs, gts, orig_sizes)
    result = {
        "dtype": dtype_name,
        "tolerance": tolerance,
        "num_samples": len(ref_probs),
        "reference": {"name": "math", "ms": ref_ms, "peak_mem_mb": ref_peak, "kernel": ref_kernel, **ref_scores},
        "backends": {},
        "skipped": skipped,
    }
    passed = ref_kernel == "explicit"
    for name in names:
        probs, ms, peak, kernel = run_backend(model, batches, name, device, dtype)
        diffs = torch.stack([(p - r).abs().max() for p, r in zip(probs, ref_probs)])
        means = torch.stack([(p - r).abs().mean() for p, r in zip(probs, ref_probs)])
        scores = _scores(probs, gts, orig_sizes)
        entry = {
            "max_abs_diff": float(diffs.max()),
            "mean_abs_diff": float(means.mean()),
            "delta_Sm": None if scores["Sm"] is None else scores["Sm"] - ref_scores["Sm"],
            "delta_MAE": None if scores["MAE"] is None else scores["MAE"] - ref_scores["MAE"],
            "ms": ms,
            "peak_mem_mb": peak,
            "kernel": kernel,
            "speedup_vs_math": ref_ms / ms if ms > 0 else None,
        }
        entry["passed"] = entry["max_abs_diff"] <= tolerance and kernel != "explicit"
        passed = passed and entry["passed"]
        result["backends"][name] = entry
    set_attention_backend(model, "auto")
    result["passed"] = bool(passed)
    return result


def _scores(probs, gts, orig_sizes) -> Dict[str, Optional[float]]:
    """Mean S-measure and MAE of probability maps against their ground truths."""
    if not gts:
        return {"Sm": None, "MAE": None}
    from engine.evaluation.metrics import CODMetrics

    metrics = CODMetrics(measures=("Sm", "MAE"))
    for i, (prob, gt) in enumerate(zip(probs, gts)):
        size = tuple(orig_sizes[i]) if orig_sizes else tuple(gt.shape[-2:])
        prob = F.interpolate(prob[None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
        metrics.update(prob.clamp(0, 1).numpy(), gt)
    out = metrics.compute()
    return {"Sm": float(out["Sm"]), "MAE": float(out["MAE"])}


def unit_check(
    device: torch.device, dtype_name: str = "fp32", shapes: Sequence[Tuple[int, int, int, int]] = UNIT_SHAPES,
    tolerance: Optional[float] = None,
) -> List[dict]:
    """Random Q/K/V at several shapes: each usable SDPA kernel against explicit math."""
    dtype = DTYPES[dtype_name]
    tolerance = DEFAULT_TOLERANCE[dtype_name] if tolerance is None else tolerance
    names, _ = backends_to_check(device, dtype)
    rows = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    for shape in shapes:
        q, k, v = (torch.randn(*shape, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
        # Reference in fp32 from the same (rounded) inputs: isolates the kernel's own error.
        ref = math_attention(q.float(), k.float(), v.float())
        for name in names:
            with sdpa_kernel_context(name):
                out = F.scaled_dot_product_attention(q, k, v).float()
            err = float((out - ref).abs().max())
            rows.append({"shape": list(shape), "backend": name, "max_abs_diff": err, "passed": err <= tolerance})
    return rows


@torch.no_grad()
def attention_routing(model, batches: Sequence[torch.Tensor], device: torch.device, dtype: torch.dtype) -> Dict[str, dict]:
    """How much of the checked data the router sent to the attention expert, per MoE layer.

    A comparison of attention backends says nothing about attention when no checked token was
    routed to the attention expert: its output was multiplied by zero everywhere.

    Returns:
        ``{layer: {"samples": images with at least one token routed to attention, "token_share":
        fraction of tokens routed there, "mean_gate": mean gate where routed}}`` (empty when the
        model has no attention expert in any MoE layer).
    """
    from models.experts import AttentionExpert
    from models.moe import MoELayer

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, MoELayer)]
    names = dict(zip([n for n, _ in layers], getattr(model, "moe_layer_names", [n for n, _ in layers])))
    stats: Dict[str, dict] = {}
    hooks = []
    for name, moe in layers:
        idx = [i for i, e in enumerate(moe.experts) if isinstance(e, AttentionExpert)]
        if not idx:
            continue
        acc = stats.setdefault(names[name], {"samples": 0, "tokens": 0, "routed": 0, "gate_sum": 0.0})

        def hook(module, inputs, acc=acc, e=idx[0]):
            _, gates, dispatch = module.route(module.norm(inputs[0]))
            routed = dispatch[:, e]  # (B, h, w)
            acc["samples"] += int(routed.flatten(1).any(dim=1).sum())
            acc["tokens"] += routed.numel()
            acc["routed"] += int(routed.sum())
            acc["gate_sum"] += float(gates[:, e][routed].float().sum())

        hooks.append(moe.register_forward_pre_hook(hook))
    try:
        model.eval()
        with attention_core_precision(model, device, dtype):
            for images in batches:
                model(images.to(device))
    finally:
        for h in hooks:
            h.remove()
    return {
        layer: {
            "samples": a["samples"],
            "token_share": a["routed"] / max(a["tokens"], 1),
            "mean_gate": a["gate_sum"] / a["routed"] if a["routed"] else None,
        }
        for layer, a in stats.items()
    }
