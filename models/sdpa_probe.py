"""Which SDPA kernels run on a device (found by trying each one on a tiny input), and one status
line saying what a model's attention actually runs there and why."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import ENV_VAR, FUSED_SDPA_KERNELS, SDTAEncoder, attention_backend_from_env, sdpa_kernel_context

__all__ = [
    "SDPA_KERNELS",
    "AttentionBackendError",
    "KernelSupport",
    "attention_status_line",
    "default_probe_dtype",
    "policy_summary",
    "probe_sdpa_kernels",
    "require_usable_attention",
]

# The fused kernels and SDPA's own math kernel (not the model's explicit math path).
SDPA_KERNELS = (*FUSED_SDPA_KERNELS, "math")


@dataclass
class KernelSupport:
    """Whether one SDPA kernel ran, and why not when it did not."""

    usable: bool
    reason: str = ""


def default_probe_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU (what training would use)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def probe_sdpa_kernels(
    device: torch.device, dtype: Optional[torch.dtype] = None, head_dim: int = 32, tokens: int = 64
) -> Dict[str, KernelSupport]:
    """Try every SDPA kernel pinned alone on ``device``.

    Args:
        device: where to run.
        dtype: input dtype (default: :func:`default_probe_dtype`).
        head_dim: head size of the probe (a multiple of 8, as the model uses).
        tokens: sequence length of the probe.

    Returns:
        ``{"flash" | "efficient" | "cudnn" | "math": KernelSupport}``.
    """
    dtype = dtype or default_probe_dtype(device)
    # A private generator: probing must not move the global random streams (a run that probes at
    # start-up would otherwise not resume bit-identically).
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(2, 2, tokens, head_dim, device=device, dtype=dtype, generator=gen)
    result: Dict[str, KernelSupport] = {}
    for name in SDPA_KERNELS:
        try:
            with warnings.catch_warnings():
                # torch warns for every kernel it rules out; the answer is the exception.
                warnings.simplefilter("ignore")
                with sdpa_kernel_context(name):
                    F.scaled_dot_product_attention(q, q, q)
            result[name] = KernelSupport(True)
        except RuntimeError as exc:
            reason = str(exc).splitlines()[0][:160]
            if device.type != "cuda" and name in ("efficient", "cudnn"):
                # torch only says "No viable backend" here; the cause is the device.
                reason = f"a CUDA-only kernel, not available on {device.type}"
            result[name] = KernelSupport(False, reason)
    return result


def policy_summary() -> str:
    """One line describing the attention policy in force for newly built models."""
    policy = attention_backend_from_env()
    if policy == "math":
        return "math (TORCH_SDPA_BACKEND=math: explicit softmax(QK^T)V, SDPA never called)"
    if policy == "auto":
        return "auto (F.scaled_dot_product_attention picks the fastest usable kernel)"
    return f"{policy} (F.scaled_dot_product_attention pinned to the {policy} kernel)"


class AttentionBackendError(ValueError):
    """The SDPA kernel that attention is pinned to cannot run on this device and dtype."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _source(backend: str) -> str:
    """Where a non-auto backend most likely came from (the env policy, else the model's own setting)."""
    if attention_backend_from_env() == backend:
        return f"{ENV_VAR}={backend}"
    if backend == "math":
        return "use_flash_attn=false or set_attention_backend(model, 'math')"
    return f"set_attention_backend(model, {backend!r})"


def _backend_status(backend: str, device: torch.device, dtype: torch.dtype,
                    kernels: Optional[Dict[str, KernelSupport]]) -> str:
    if backend == "math" or kernels is None:
        return f"explicit math attention ({_source('math')}): softmax(QK^T)V, SDPA never called"
    where = f"{device.type} [{_dtype_name(dtype)}]"
    if backend != "auto":
        support = kernels[backend]
        if support.usable:
            return f"SDPA pinned to the {backend} kernel ({_source(backend)}), usable on {where}"
        return (f"SDPA pinned to the {backend} kernel ({_source(backend)}), which cannot run on {where} "
                f"({support.reason}): attention calls will fail; use auto or a usable kernel")
    fused = [k for k in FUSED_SDPA_KERNELS if kernels[k].usable]
    if not fused:
        return f"SDPA on {where}: no fused kernel usable, runs PyTorch's math kernel"
    if device.type != "cuda":
        # PyTorch's CPU "flash" backend is its own tiled C++ kernel, not the FlashAttention CUDA kernel.
        return f"SDPA on {where}: PyTorch's fused CPU kernel ({', '.join(fused)})"
    return f"SDPA (auto) on {where}, usable kernels: {', '.join(fused)} (PyTorch picks one per call)"


def _backends(model: Optional[nn.Module], use_flash_attn: bool) -> list:
    """The attention backends of ``model``'s modules, or the one a new model would get."""
    if model is not None:
        return sorted({m.attn_backend for m in model.modules() if isinstance(m, SDTAEncoder)})
    return [attention_backend_from_env() if use_flash_attn else "math"]


def require_usable_attention(
    device: torch.device,
    dtype: Optional[torch.dtype] = None,
    model: Optional[nn.Module] = None,
    use_flash_attn: bool = True,
) -> None:
    """Refuse, before any work, attention pinned to an SDPA kernel that cannot run here.

    Without this check the first forward pass ends in PyTorch's "No viable backend for
    scaled_dot_product_attention" traceback (e.g. ``TORCH_SDPA_BACKEND=efficient`` on a CPU, or
    ``flash`` with fp32 on a GPU). ``auto`` and ``math`` always run.

    Args:
        device, dtype, model, use_flash_attn: as for :func:`attention_status_line`.

    Raises:
        AttentionBackendError: naming the kernel, where it was pinned, why it cannot run, and
            the kernels that can.
    """
    pinned = [b for b in _backends(model, use_flash_attn) if b not in ("auto", "math")]
    if not pinned:
        return
    dtype = dtype or default_probe_dtype(device)
    kernels = probe_sdpa_kernels(device, dtype)
    for backend in pinned:
        if not kernels[backend].usable:
            usable = [k for k in FUSED_SDPA_KERNELS if kernels[k].usable]
            raise AttentionBackendError(
                f"Attention is pinned to the {backend} SDPA kernel ({_source(backend)}), which cannot run on "
                f"{device.type} [{_dtype_name(dtype)}]: {kernels[backend].reason}. Use auto (unset {ENV_VAR}), "
                f"math{', or a kernel usable here: ' + ', '.join(usable) if usable else ''}."
            )


def attention_status_line(
    device: torch.device,
    dtype: Optional[torch.dtype] = None,
    model: Optional[nn.Module] = None,
    use_flash_attn: bool = True,
) -> str:
    """What attention actually runs on ``device``, and why, in one line for logs and ``info``.

    Examples: ``"explicit math attention (TORCH_SDPA_BACKEND=math): ..."``,
    ``"SDPA (auto) on cuda [bfloat16], usable kernels: flash, efficient, cudnn (...)"``,
    ``"SDPA on cpu [float32]: no fused kernel usable, runs PyTorch's math kernel"``.

    Args:
        device: the device the model runs on.
        dtype: compute dtype (the autocast dtype; default: :func:`default_probe_dtype`).
        model: a built model: its attention modules' backends are reported (they may differ from
            the process policy after :func:`~models.attention.set_attention_backend`).
        use_flash_attn: without ``model``: the ``use_flash_attn`` a model would be built with.

    Returns:
        The status line; several backends in one model are reported joined by ``"; "``.
    """
    dtype = dtype or default_probe_dtype(device)
    backends = _backends(model, use_flash_attn)
    if not backends:
        return "no attention modules in this model"
    kernels = probe_sdpa_kernels(device, dtype) if any(b != "math" for b in backends) else None
    return "; ".join(_backend_status(b, device, dtype, kernels) for b in backends)
