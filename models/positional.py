"""EdgeNeXt's Fourier positional encoding, built on the device.

timm's ``PositionalEncodingFourier`` starts every forward pass from a CPU tensor that it copies
to the GPU. A pageable host-to-device copy synchronises the stream, so each forward waited for
all queued GPU work, and CUDA-graph capture refused the model. The subclass below computes the
same sine/cosine grid directly on the device (same formula, same values), keeps the learned
1x1 projection and its state-dict keys, and projects a single grid that is then broadcast over
the batch.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

__all__ = ["DeviceFourierEncoding", "use_device_positional_encoding"]

try:  # timm >= 0.9
    from timm.models.edgenext import PositionalEncodingFourier
except ImportError:  # pragma: no cover - older timm layouts
    PositionalEncodingFourier = None


if PositionalEncodingFourier is not None:

    class DeviceFourierEncoding(PositionalEncodingFourier):
        """Drop-in ``PositionalEncodingFourier`` whose grid never leaves the device."""

        def _axis(self, n: int, device: torch.device, dim_t: torch.Tensor) -> torch.Tensor:
            # Positions 1..n normalised to (0, 2*pi]: the cumulative sum of an all-ones mask.
            pos = torch.arange(1, n + 1, device=device, dtype=torch.float32)
            pos = pos / (pos[-1:] + 1e-6) * self.scale
            angles = pos[:, None] / dim_t  # (n, hidden)
            # sin on even channels, cos on odd ones, interleaved back: (n, hidden)
            return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

        def forward(self, shape: Tuple[int, int, int]) -> torch.Tensor:
            B, H, W = shape
            weight = self.token_projection.weight
            dim_t = torch.arange(self.hidden_dim, device=weight.device, dtype=torch.float32)
            dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.hidden_dim)
            pos_y = self._axis(H, weight.device, dim_t)[:, None, :].expand(H, W, self.hidden_dim)
            pos_x = self._axis(W, weight.device, dim_t)[None, :, :].expand(H, W, self.hidden_dim)
            grid = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)[None]  # (1, 2*hidden, H, W)
            pos = self.token_projection(grid.to(weight.dtype))  # (1, dim, H, W)
            return pos.expand(B, -1, -1, -1)

else:  # pragma: no cover
    DeviceFourierEncoding = None


def use_device_positional_encoding(model: nn.Module) -> int:
    """Switch every timm ``PositionalEncodingFourier`` in ``model`` to :class:`DeviceFourierEncoding`.

    Only the class changes (parameters, buffers and state-dict keys stay), so pretrained and
    saved weights load as before.

    Returns:
        The number of modules switched.
    """
    if PositionalEncodingFourier is None:
        return 0
    count = 0
    for module in model.modules():
        if type(module) is PositionalEncodingFourier:
            module.__class__ = DeviceFourierEncoding
            count += 1
    return count
