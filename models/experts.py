"""The seven expert types of the mixture-of-experts layers.

Every expert maps a (B, C, H, W) map to an update of the same shape; the MoE layer adds the
gate-weighted sum of updates to its input (so a token that skips an expert keeps its features).
Experts are light on purpose: all of them run on every token, at every MoE level. Each expert's
last layer starts at zero (:func:`zero_init_`), so a new expert's update is zero and the model
starts as its plain decoder (as ResNets zero the last norm of each residual branch).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import SDTAEncoder
from .resize import resize

__all__ = [
    "EXPERT_TYPES",
    "AttentionExpert",
    "ContrastExpert",
    "EdgeExpert",
    "FrequencyExpert",
    "HybridExpert",
    "SemanticContextExpert",
    "TextureExpert",
    "adaptive_avg_pool",
    "build_experts",
    "zero_init_",
]


def zero_init_(layer: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias in place (the last layer of a residual branch)."""
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _dw(dim: int, k: int = 3, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(dim, dim, k, padding=dilation * (k // 2), dilation=dilation, groups=dim)


def _pw(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1)


class TextureExpert(nn.Module):
    """Multi-dilation depthwise convolutions: texture statistics at several scales.

    Args:
        dim: channels.
        dilations: dilation of each 3x3 depthwise branch.
    """

    def __init__(self, dim: int, dilations: Sequence[int] = (1, 2, 3), **_):
        super().__init__()
        self.branches = nn.ModuleList(_dw(dim, 3, d) for d in dilations)
        self.fuse = zero_init_(_pw(dim * len(dilations), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(F.gelu(torch.cat([b(x) for b in self.branches], dim=1)))


class AttentionExpert(nn.Module):
    """Global self-attention through :class:`SDTAEncoder`.

    Args:
        dim: channels.
        num_heads: requested heads (adjusted so head_dim % 8 == 0).
        use_flash_attn: fused SDPA (True) or explicit math attention (False).
        pool: pooling before attention, so tokens stay at <= 1/16 input resolution.
    """

    # The MoE layer computes in float32 under autocast; this expert runs under the caller's
    # autocast instead, where the encoder takes its attention core to half precision (the
    # fused SDPA kernels need it) and keeps the rest in float32.
    runs_under_autocast = True

    def __init__(self, dim: int, num_heads: int = 8, use_flash_attn: bool = True, pool: int = 1, **_):
        super().__init__()
        self.encoder = SDTAEncoder(dim, num_heads=num_heads, use_flash_attn=use_flash_attn, pool=pool)
        # The positional conv adds to the token stream itself, so it is zeroed too: with the two
        # branch outputs it is all the update holds when no pooling is involved.
        zero_init_(self.encoder.pos)
        zero_init_(self.encoder.proj)
        zero_init_(self.encoder.mlp[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The encoder is a residual block; the expert contributes only its update.
        return self.encoder(x) - x


class HybridExpert(nn.Module):
    """Local large-kernel convolution modulated by a global (image-level) context gate."""

    def __init__(self, dim: int, **_):
        super().__init__()
        self.local = nn.Sequential(_dw(dim, 7), nn.GELU(), zero_init_(_pw(dim, dim)))
        hidden = max(8, dim // 4)
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), _pw(dim, hidden), nn.GELU(), _pw(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local(x) * torch.sigmoid(self.context(x))


class FrequencyExpert(nn.Module):
    """Splits features into low- and high-frequency parts and processes each.

    A box blur gives the low band and the residual the high band: camouflage hides in
    low-frequency colour while boundaries leak in the high band. Shape-preserving at any
    map size (no FFT, so it runs in bf16 and compiles).
    """

    def __init__(self, dim: int, blur: int = 5, **_):
        super().__init__()
        self.blur = blur
        self.low = _dw(dim, 3)
        self.high = _dw(dim, 3)
        self.fuse = zero_init_(_pw(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.avg_pool2d(x, self.blur, stride=1, padding=self.blur // 2, count_include_pad=False)
        high = x - low
        return self.fuse(F.gelu(torch.cat([self.low(low), self.high(high)], dim=1)))


class EdgeExpert(nn.Module):
    """Fixed Sobel (x, y) and Laplacian filters per channel, fused by a learned 1x1 conv."""

    def __init__(self, dim: int, **_):
        super().__init__()
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
        laplace = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]) / 4.0
        kernels = torch.stack([sobel_x, sobel_x.t(), laplace])  # (3, 3, 3)
        # (3*dim, 1, 3, 3): channel 3c+j of the tripled map gets filter j of channel c.
        self.register_buffer("kernels", kernels.repeat(dim, 1, 1).unsqueeze(1), persistent=False)
        self.dim = dim
        self.fuse = nn.Sequential(_pw(3 * dim, dim), nn.GELU(), zero_init_(_pw(dim, dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        # Each channel three times in a row, built channels-last, then one plain depthwise conv
        # (groups = 3C). The same filters as a grouped conv with 3 outputs per group
        # (groups = C): measured on an H100, cuDNN ran that one as ~64 kernel launches, 0.4 ms
        # of host time for a 12x12 map.
        tripled = x.permute(0, 2, 3, 1).unsqueeze(-1).expand(B, H, W, C, 3)  # (B, H, W, C, 3)
        tripled = tripled.reshape(B, H, W, 3 * C).permute(0, 3, 1, 2)  # (B, 3C, H, W)
        edges = F.conv2d(tripled, self.kernels.to(x.dtype), padding=1, groups=3 * C)  # (B, 3C, H, W)
        return self.fuse(edges.abs())


def _pooling_matrix(n, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, n) averaging weights of adaptive average pooling along one axis of length ``n``.

    Bin i averages positions floor(i*n/bins) to ceil((i+1)*n/bins) - 1, as ``adaptive_avg_pool2d``.
    """
    i = torch.arange(bins, device=like.device)
    start = (i * n) // bins  # (bins,)
    end = ((i + 1) * n + bins - 1) // bins  # (bins,) ceil division
    j = torch.arange(n, device=like.device)  # (n,)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])  # (bins, n)
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` that stays correct in a graph exported with dynamic sizes.

    Exporters turn ``adaptive_avg_pool2d`` into windows fixed at the traced map size: on an
    ONNX graph traced at 64 px and fed 128x96 images, they read out of bounds or average the
    wrong windows. Where the map's size is symbolic (``torch.export`` with dynamic shapes) or an
    ONNX export traces, the same averages are taken as two small matrix products whose weights
    are computed from the size; eager and compiled code keep the pooling kernel.
    """
    h, w = x.shape[-2:]
    if type(h) is int and type(w) is int and not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, bins)
    rows = _pooling_matrix(h, bins, x)  # (bins, H)
    cols = _pooling_matrix(w, bins, x)  # (bins, W)
    return torch.matmul(torch.matmul(rows, x), cols.t())  # (B, C, bins, bins)


class SemanticContextExpert(nn.Module):
    """Pyramid pooling (PSPNet-style): scene context pooled into 1x1, 2x2 and 4x4 bins.

    Channels are reduced once before pooling (a 1x1 conv commutes with average pooling), so
    the pooling passes move a quarter of the data.
    """

    def __init__(self, dim: int, bins: Sequence[int] = (1, 2, 4), **_):
        super().__init__()
        self.bins = tuple(bins)
        reduced = max(8, dim // 4)
        self.reduce = _pw(dim, reduced)
        self.fuse = zero_init_(_pw(dim + reduced, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        r = self.reduce(x)  # (B, C/4, H, W)
        context = None
        for b in self.bins:
            pooled = adaptive_avg_pool(r, b)  # (B, C/4, b, b)
            # A 1x1 bin resized bilinearly is a constant map: it joins the sum by broadcasting.
            pooled = pooled if b == 1 else resize(pooled, size)
            context = pooled if context is None else context + pooled
        if context.shape[-2:] != size:  # only 1x1 bins
            context = context.expand_as(r)
        return self.fuse(F.gelu(torch.cat([x, context], dim=1)))


class ContrastExpert(nn.Module):
    """Centre-surround contrast: features minus their local means at several window sizes."""

    def __init__(self, dim: int, windows: Sequence[int] = (3, 7), **_):
        super().__init__()
        self.windows = tuple(windows)
        self.fuse = nn.Sequential(_pw(dim * len(self.windows), dim), nn.GELU(), zero_init_(_dw(dim, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        contrasts = [x - F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False) for k in self.windows]
        return self.fuse(torch.cat(contrasts, dim=1))


EXPERT_TYPES: Dict[str, Callable[..., nn.Module]] = {
    "texture": TextureExpert,
    "attention": AttentionExpert,
    "hybrid": HybridExpert,
    "frequency": FrequencyExpert,
    "edge": EdgeExpert,
    "context": SemanticContextExpert,
    "contrast": ContrastExpert,
}


def build_experts(names: Sequence[str], dim: int, **kwargs) -> List[nn.Module]:
    """Instantiate experts by name (keys of :data:`EXPERT_TYPES`).

    Args:
        names: expert names, e.g. ``("texture", "attention", ...)``.
        dim: channels of the level.
        **kwargs: passed to every expert (``num_heads``, ``use_flash_attn``, ``pool``); each
            expert takes what it needs.
    """
    unknown = [n for n in names if n not in EXPERT_TYPES]
    if unknown:
        raise ValueError(f"Unknown expert(s) {unknown}. Valid experts: {', '.join(EXPERT_TYPES)}.")
    return [EXPERT_TYPES[n](dim, **kwargs) for n in names]
