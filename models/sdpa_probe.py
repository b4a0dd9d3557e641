"""Which SDPA kernels run on a device, found by trying each one on a tiny input."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .attention import FUSED_SDPA_KERNELS, attention_backend_from_env, sdpa_kernel_context

__all__ = ["SDPA_KERNELS", "KernelSupport", "default_probe_dtype", "policy_summary", "probe_sdpa_kernels"]

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
    q = torch.randn(2, 2, tokens, head_dim, device=device, dtype=dtype)
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
            result[name] = KernelSupport(False, str(exc).splitlines()[0][:160])
    return result


def policy_summary() -> str:
    """One line describing the attention policy in force for newly built models."""
    policy = attention_backend_from_env()
    if policy == "math":
        return "math (TORCH_SDPA_BACKEND=math: explicit softmax(QK^T)V, SDPA never called)"
    if policy == "auto":
        return "auto (F.scaled_dot_product_attention picks the fastest usable kernel)"
    return f"{policy} (F.scaled_dot_product_attention pinned to the {policy} kernel)"
