"""Inference: loading trained models, batched prediction, post-processing to mask files, CUDA-graph replay.

``from engine.inference import Segmenter`` is the Python entry point (see
:class:`engine.inference.api.Segmenter`); it is imported lazily so the other modules of this
package load without the data stack.
"""
from __future__ import annotations

__all__ = ["Segmenter"]


def __getattr__(name: str):
    if name == "Segmenter":
        from engine.inference.api import Segmenter

        return Segmenter
    raise AttributeError(f"module 'engine.inference' has no attribute {name!r}")
