"""Multi-scale decoder: top-down fusion to full-resolution logits, plus side outputs."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from .resize import resize, resize_logits

__all__ = ["DECODERS", "ConvBNAct", "FPNDecoder", "build_decoder"]


class ConvBNAct(nn.Sequential):
    """Conv2d + BatchNorm + GELU."""

    def __init__(self, c_in: int, c_out: int, k: int = 3):
        super().__init__(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.GELU())


def _side_logits(side_heads: nn.ModuleList, levels: List[torch.Tensor]) -> List[torch.Tensor]:
    # levels[i] is coarsest-first; side head j belongs to pyramid level j (finest first). Every
    # side map is brought to the finest level's size (1/4 of the input), not the input's: an
    # upsampled coarse map holds nothing more at full size, and its loss there cost 16x the
    # pixels (measured on an H100: ~3 ms of a 22-ms step at 384 px, batch 16).
    size = levels[-1].shape[-2:]
    n = len(levels)
    return [resize_logits(side_heads[n - 1 - i](lvl), size) for i, lvl in enumerate(levels)]


class FPNDecoder(nn.Module):
    """Top-down feature pyramid decoder.

    The coarsest map is upsampled and added to the next finer one, down to the finest level;
    with ``refine`` each merge is followed by a 3x3 conv (``"refine"``), without it the merges
    are plain sums (``"fpn"``: the plain FPN reference the experts must beat). A head turns the
    finest map into one-channel logits, upsampled to the input size. Each level can also have a
    1x1 side head for deep supervision.

    Args:
        dim: channels of every input level (the model projects the backbone to this width).
        num_levels: number of pyramid levels, finest first.
        side_outputs: build the deep-supervision side heads. Without them no parameter sits
            unused in training (DDP would wait for its gradient).
        refine: a 3x3 conv after every top-down merge.
    """

    def __init__(self, dim: int, num_levels: int = 4, side_outputs: bool = True, refine: bool = True):
        super().__init__()
        self.fuse = nn.ModuleList((ConvBNAct(dim, dim) if refine else nn.Identity()) for _ in range(num_levels - 1))
        self.head = nn.Sequential(ConvBNAct(dim, dim), nn.Conv2d(dim, 1, 1))
        n_sides = num_levels if side_outputs else 0
        self.side_heads = nn.ModuleList(nn.Conv2d(dim, 1, 1) for _ in range(n_sides))

    def forward(
        self, feats: Sequence[torch.Tensor], out_size: Tuple[int, int], with_sides: bool = False
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Decode pyramid ``feats`` (finest first) to (B, 1, *out_size) logits.

        Returns:
            The main logits and, when ``with_sides``, one side logit map per level (coarsest
            first), each at the finest level's size (stride 4); otherwise an empty list.
        """
        y = feats[-1]
        levels = [y]
        for f, fuse in zip(reversed(feats[:-1]), self.fuse):
            y = fuse(f + resize(y, f.shape[-2:]))
            levels.append(y)
        logits = resize_logits(self.head(y), out_size)
        sides = _side_logits(self.side_heads, levels) if with_sides and len(self.side_heads) else []
        return logits, sides


#: Decoder names of ``model.decoder`` and whether each refines its merges.
DECODERS = {"refine": True, "fpn": False}


def build_decoder(name: str, dim: int, num_levels: int = 4, side_outputs: bool = True) -> nn.Module:
    """Build a decoder by name (keys of :data:`DECODERS`)."""
    if name not in DECODERS:
        raise ValueError(f"Unknown decoder {name!r}. Valid decoders: {', '.join(DECODERS)}.")
    return FPNDecoder(dim, num_levels=num_levels, side_outputs=side_outputs, refine=DECODERS[name])
