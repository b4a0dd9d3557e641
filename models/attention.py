"""Spatial self-attention (`SDTAEncoder`) and the one attention-backend policy.

The policy is a single string read once when a module is built:

* ``auto`` (default): ``F.scaled_dot_product_attention`` picks its fastest kernel.
* ``flash`` / ``efficient`` / ``cudnn``: SDPA pinned to that kernel.
* ``math``: the explicit ``softmax(Q K^T * scale) V`` reference path; SDPA is never called.

``TORCH_SDPA_BACKEND`` in the environment sets the process-wide policy; a module built
with ``use_flash_attn=False`` always runs the explicit path. ``set_attention_backend``
switches a built model without touching its weights.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# The policy names live in a torch-free module (the CLI checks them before importing torch).
from .names import ATTENTION_BACKENDS, ENV_VAR, FUSED_SDPA_KERNELS, attention_backend_from_env, resolve_attention_backend
from .precision import pause_autocast

__all__ = [
    "ATTENTION_BACKENDS",
    "ENV_VAR",
    "FUSED_SDPA_KERNELS",
    "SDTAEncoder",
    "attention_backend_from_env",
    "choose_num_heads",
    "math_attention",
    "resolve_attention_backend",
    "sdpa_kernel_context",
    "set_attention_backend",
]


def _sdpa_backends() -> dict:
    from torch.nn.attention import SDPBackend

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        backends["cudnn"] = SDPBackend.CUDNN_ATTENTION
    return backends


def sdpa_kernel_context(backend: str):
    """Context manager pinning SDPA to one kernel; a no-op for ``auto``.

    ``math`` here pins SDPA's own math kernel (used by the kernel checks); the model's
    ``math`` policy does not call SDPA at all.
    """
    backend = resolve_attention_backend(backend)
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    kernels = _sdpa_backends()
    if backend not in kernels:
        raise RuntimeError(f"SDPA backend {backend!r} is not available in torch {torch.__version__}.")
    return sdpa_kernel([kernels[backend]])


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Explicit attention, the reference for SDPA: ``softmax(Q K^T / sqrt(d)) V``.

    Computed in float32 whatever the inputs' dtype, rounded once at the output, as the fused
    kernels keep their scores and softmax in float32. Scores rounded to bf16 (8 significant bits)
    put errors of several percent into the weights of a peaked attention: on scores up to 35 the
    explicit path was off by 0.1 where SDPA was off by 0.01 (float64 reference), and a trained
    checkpoint failed the bf16 attention check on the reference's error, not the kernels'.

    Args:
        q, k, v: (B, heads, N, head_dim).
    """
    scale = q.shape[-1] ** -0.5
    attn = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, nh, N, N)
    return (attn.softmax(dim=-1) @ v.float()).to(v.dtype)  # (B, nh, N, hd)


def choose_num_heads(dim: int, requested: int = 8, min_head_dim: int = 16) -> int:
    """Largest head count <= ``requested`` whose head_dim is a multiple of 8.

    Flash and memory-efficient kernels need ``head_dim % 8 == 0``; other head dims
    silently fall back to slower kernels. Heads are also capped so that head_dim stays
    at least ``min_head_dim`` (when ``dim`` allows it), since tiny heads waste the kernels.

    Raises:
        ValueError: when ``dim`` is not a multiple of 8.
    """
    if dim % 8 != 0:
        raise ValueError(
            f"Attention width {dim} is not a multiple of 8, so no head count gives a head_dim "
            f"that fused kernels accept. Use a model width that is a multiple of 8 (e.g. {max(8, dim // 8 * 8)})."
        )
    for heads in range(max(1, requested), 0, -1):
        head_dim, rem = divmod(dim, heads)
        if rem == 0 and head_dim % 8 == 0 and (head_dim >= min_head_dim or heads == 1):
            return heads
    return 1


class SDTAEncoder(nn.Module):
    """Multi-head self-attention over the spatial tokens of a (B, C, H, W) map.

    Pre-norm transformer block (attention + MLP, both residual) with a depthwise-conv
    positional encoding. Maps finer than ``pool`` are average-pooled before attention and
    bilinearly restored after, so attention runs on at most 1/16-resolution tokens
    (576 tokens for a 384x384 image) whatever the level it sits on.

    Args:
        dim: channels C of the input map.
        num_heads: requested heads; reduced by :func:`choose_num_heads` so head_dim % 8 == 0.
        use_flash_attn: True runs ``F.scaled_dot_product_attention`` under the process policy
            (``TORCH_SDPA_BACKEND``); False always runs the explicit math path.
        pool: spatial pooling factor applied before attention (1 = none).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop_path: stochastic-depth probability for both residual branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        use_flash_attn: bool = True,
        pool: int = 1,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.num_heads = choose_num_heads(dim, num_heads)
        self.head_dim = dim // self.num_heads
        self.pool = int(pool)
        self.drop_path = float(drop_path)
        self.attn_backend = attention_backend_from_env() if use_flash_attn else "math"

        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    @property
    def use_flash_attn(self) -> bool:
        """Whether this module calls SDPA (any backend but ``math``)."""
        return self.attn_backend != "math"

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}, head_dim={self.head_dim}, pool={self.pool}, backend={self.attn_backend}"

    def _drop_path(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention core under this module's backend; q, k, v are (B, nh, N, hd)."""
        if self.attn_backend == "math":
            return math_attention(q, k, v)
        if self.attn_backend == "auto":
            return F.scaled_dot_product_attention(q, k, v)
        with sdpa_kernel_context(self.attn_backend):
            return F.scaled_dot_product_attention(q, k, v)

    def _tokens_attention(self, t: torch.Tensor, core_dtype: Optional[torch.dtype]) -> torch.Tensor:
        B, N, C = t.shape
        qkv = self.qkv(self.norm1(t))  # (B, N, 3C)
        if core_dtype is not None:
            qkv = qkv.to(core_dtype)  # one cast for q, k and v
        qkv = qkv.view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, nh, N, hd)
        q, k, v = qkv.unbind(0)
        out = self.attend(q, k, v)  # (B, nh, N, hd)
        out = out.transpose(1, 2).reshape(B, N, C).to(t.dtype)  # (B, N, C)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W) in the parameters' dtype.

        Under autocast only the attention core (q, k, v and the SDPA or math kernel) runs in the
        autocast dtype, which the fused kernels need; the convolution, norms and linear layers
        compute in the parameters' dtype. On the small token maps this block sits on, their cost
        is kernel launches, and autocast would add a cast of every weight (and its gradient).
        """
        paused, core_dtype = pause_autocast(x.device.type)
        with paused:
            return self._forward(x.to(self.qkv.weight.dtype), core_dtype)

    def _forward(self, x: torch.Tensor, core_dtype: Optional[torch.dtype]) -> torch.Tensor:
        B, C, H, W = x.shape
        y = F.avg_pool2d(x, self.pool) if self.pool > 1 else x
        y = y + self.pos(y)
        h, w = y.shape[-2:]
        t = y.flatten(2).transpose(1, 2)  # (B, N=h*w, C)
        t = t + self._drop_path(self._tokens_attention(t, core_dtype))
        t = t + self._drop_path(self.mlp(self.norm2(t)))
        y_out = t.transpose(1, 2).reshape(B, C, h, w)  # (B, C, h, w)
        if self.pool > 1:
            # Restore only the change attention made, so fine detail in x survives pooling.
            delta = F.interpolate(y_out - y, size=(H, W), mode="bilinear", align_corners=False)
            return x + delta
        return y_out


def set_attention_backend(model: nn.Module, backend: str) -> int:
    """Switch every :class:`SDTAEncoder` in ``model`` to ``backend``; weights are untouched.

    Args:
        model: any module (a compiled model's ``_orig_mod`` is reached through ``modules()``).
        backend: one of :data:`ATTENTION_BACKENDS`.

    Returns:
        The number of attention modules switched.
    """
    backend = resolve_attention_backend(backend)
    count = 0
    for module in model.modules():
        if isinstance(module, SDTAEncoder):
            module.attn_backend = backend
            count += 1
    return count
