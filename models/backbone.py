"""timm EdgeNeXt as a multi-scale feature extractor, with pretrained weights loaded through timm.

Weights come from timm's own mechanism: the Hugging Face cache/hub when reachable
(``HF_HUB_OFFLINE=1`` and ``HF_HOME`` are honoured), or a local file passed as
``pretrained_weights`` (``.safetensors``, ``.pth`` / ``.pt`` / ``.bin``). Weights asked for and
not found raise :class:`PretrainedWeightsError`; the model is never silently left at random init.

Without a network (Kaggle's internet-off setting) the hub client would retry for about a minute
before failing. So one short connection attempt to the hub (:data:`HUB_PROBE_TIMEOUT_S`, once per
process) decides first: unreachable means the same loading code runs in the hub client's offline
mode, which still finds cached weights and otherwise fails at once with the fix.
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union
from urllib.parse import urlparse

import torch
import torch.nn as nn

from .names import SUPPORTED_BACKBONES
from .positional import use_device_positional_encoding

__all__ = [
    "HUB_PROBE_TIMEOUT_S",
    "SUPPORTED_BACKBONES",
    "FeatureBackbone",
    "PretrainedWeightsError",
    "build_backbone",
    "hub_reachable",
]



class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for and could not be loaded."""


#: Seconds one connection attempt to the hub may take before the machine counts as offline.
HUB_PROBE_TIMEOUT_S = 3.0
_hub_reachable_cache: Optional[bool] = None  # one probe per process


def _env_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "0"
    return value.strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hugging Face hub (``$HF_ENDPOINT`` or huggingface.co) opens.

    Probed once per process; later calls return the first answer.
    """
    global _hub_reachable_cache
    if _hub_reachable_cache is None:
        url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        port = url.port or (80 if url.scheme == "http" else 443)
        try:
            socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
            _hub_reachable_cache = True
        except OSError:
            _hub_reachable_cache = False
    return _hub_reachable_cache


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """The hub client's offline mode (cache only, no requests) for the duration of the block.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once at import, so the switch is its
    ``constants.HF_HUB_OFFLINE`` (what ``huggingface_hub.is_offline_mode()`` returns).
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _check_name(name: str) -> None:
    if name not in SUPPORTED_BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}. Valid backbones: {', '.join(SUPPORTED_BACKBONES)}.")


def _hub_id(name: str) -> str:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub or f"timm/{name}"


def _create(name: str, pretrained: bool, weights: Optional[Path], out_indices: Sequence[int]) -> nn.Module:
    import timm
    from timm.models import FeatureListNet

    kwargs = dict(pretrained=pretrained)
    if weights is not None:
        # timm's own loader reads the file and applies the model's checkpoint filter, exactly
        # as for hub weights.
        kwargs["pretrained_cfg_overlay"] = dict(file=str(weights), hf_hub_id=None, url=None)
    # The classifier model is built first and wrapped after: timm loads a features_only model
    # non-strictly, so a file with none of the right keys would leave it silently random.
    # With the classifier present the load is strict and a wrong file is an error.
    model = timm.create_model(name, **kwargs)
    use_device_positional_encoding(model)
    return FeatureListNet(model, out_indices=tuple(out_indices), flatten_sequential=True)


class FeatureBackbone(nn.Module):
    """A timm EdgeNeXt returning features at strides 4, 8, 16 and 32.

    Attributes:
        out_channels: channels of each returned map.
        strides: reduction of each returned map relative to the input.
    """

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.name = name
        self.model = model
        self.out_channels: List[int] = list(model.feature_info.channels())
        self.strides: List[int] = list(model.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return list(self.model(x))


def build_backbone(
    name: str = "edgenext_small",
    pretrained: bool = False,
    pretrained_weights: Optional[Union[str, os.PathLike]] = None,
    out_indices: Sequence[int] = (0, 1, 2, 3),
) -> FeatureBackbone:
    """Build a timm EdgeNeXt feature extractor.

    Args:
        name: one of :data:`SUPPORTED_BACKBONES`.
        pretrained: load ImageNet weights from the Hugging Face cache or hub.
        pretrained_weights: path to a local weight file; implies ``pretrained``.
        out_indices: which stages to return (default: all four, strides 4/8/16/32).

    Raises:
        ValueError: unknown backbone name.
        PretrainedWeightsError: weights asked for and not found, saying where it looked.
    """
    _check_name(name)
    weights = Path(pretrained_weights).expanduser() if pretrained_weights else None
    if weights is not None and not weights.is_file():
        raise PretrainedWeightsError(
            f"Pretrained weight file not found: {weights}. Pass an existing .safetensors or .pth file "
            f"(for {name}, e.g. the model.safetensors of {_hub_id(name)}), or drop pretrained_weights."
        )
    if weights is None and not pretrained:
        return FeatureBackbone(_create(name, False, None, out_indices), name)

    no_network = weights is None and not _env_offline() and not hub_reachable()
    try:
        with _hub_offline() if no_network else contextlib.nullcontext():
            model = _create(name, True, weights, out_indices)
    except PretrainedWeightsError:
        raise
    except Exception as exc:  # timm/hub raise many types: OSError, LocalEntryNotFoundError, KeyError...
        if weights is not None:
            raise PretrainedWeightsError(
                f"Could not load pretrained weights for {name} from {weights}: {exc}. The file must hold a "
                f"state dict of timm's {name} (as saved by timm or downloaded from {_hub_id(name)})."
            ) from exc
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
        )
        if no_network:
            raise PretrainedWeightsError(
                f"Pretrained weights for {name} were asked for, but this machine cannot reach the Hugging Face "
                f"hub (no connection within {HUB_PROBE_TIMEOUT_S:g} s; offline, e.g. Kaggle with internet off) and "
                f"they are not in the cache {cache}. Fix: pass a local weight file with --pretrained-weights FILE "
                f"(the model.safetensors of {_hub_id(name)}, e.g. added as a Kaggle dataset), or train from scratch "
                f"with --no-pretrained (config: model.pretrained: false)."
            ) from exc
        offline = _env_offline()
        raise PretrainedWeightsError(
            f"Pretrained weights for {name} were asked for but not found. Looked in the Hugging Face cache "
            f"{cache} and {'(offline) not ' if offline else ''}on the hub for {_hub_id(name)}: "
            f"{type(exc).__name__}: {exc}. Fix: download {_hub_id(name)} to a file and pass it with "
            f"pretrained_weights=PATH (CLI: --pretrained-weights PATH), or train from scratch with pretrained=False (CLI: --no-pretrained)."
        ) from exc
    return FeatureBackbone(model, name)
