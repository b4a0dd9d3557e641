"""A whole training step (forward, loss, backward, clipping, optimizer) replayed as one CUDA graph.

At 384 px and batch 16 a CamoXpert step launches a few thousand small kernels, and in eager
mode the host cannot queue them as fast as the GPU runs them: each expert costs ~2 ms a step
whatever its map size. Replaying a captured graph launches the whole step at once, so a step
costs what its kernels cost on the device. The capture follows PyTorch's whole-network recipe:
warm-up iterations on a side stream (kernel selection, optimizer state), gradients set to None
so backward allocates them from the graph's pool, then one capture of the step body.

Requirements of the body (checked by PyTorch at capture, where a violation raises): static
shapes, no host synchronisation (``.item()``, ``bool(tensor)``, printing), the optimizer built
with ``capturable=True`` and a tensor learning rate (see :func:`capturable_adamw`), no GradScaler
(fp16 loss scaling decides on the host; use bf16 or fp32).
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Callable, Sequence, Tuple

import torch

__all__ = ["CUDAGraphStep", "capturable_adamw", "raised_at", "reset_optimizer_state_", "set_learning_rate"]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def capturable_adamw(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """Fused AdamW whose learning rate is a device tensor, so a captured step can read a new one.

    On CUDA the optimizer is ``capturable`` (its step counters live on the device); elsewhere it
    is the plain fused/foreach AdamW with the same numbers.
    """
    on_cuda = device.type == "cuda"
    rate = torch.tensor(float(lr), device=device) if on_cuda else float(lr)
    return torch.optim.AdamW(params, lr=rate, weight_decay=weight_decay, fused=on_cuda, capturable=on_cuda)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate: in place for tensor rates (a captured graph reads the same memory)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class CUDAGraphStep:
    """Capture ``body(*static_inputs)`` once and replay it on new inputs.

    ``body`` runs the whole step (forward, loss, ``backward()``, clipping, ``optimizer.step()``)
    and returns the tensors the caller reads afterwards (the loss, routing statistics); the
    replayed step overwrites the same output tensors, so read or copy them before the next call.

    Args:
        body: the step; called ``warmup_steps`` times eagerly on a side stream, then captured.
        optimizer: its gradients are set to None before the warm-up iterations and the capture
            (the optimizer step belongs in ``body``).
        sample_inputs: tensors shaped like every later call's inputs (copied into the static
            inputs; their values drive the warm-up iterations).
        warmup_steps: eager iterations before the capture (0 when the caller already ran real
            steps eagerly). They change the weights and the optimizer state: restore them
            afterwards when the run must start from its init.
    """

    def __init__(
        self,
        body: Callable[..., Sequence[torch.Tensor]],
        optimizer: torch.optim.Optimizer,
        sample_inputs: Sequence[torch.Tensor],
        warmup_steps: int = 3,
    ):
        self.body = body
        self.optimizer = optimizer
        self.static_inputs = [t.detach().clone() for t in sample_inputs]
        if warmup_steps > 0:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup_steps):
                    optimizer.zero_grad(set_to_none=True)
                    body(*self.static_inputs)
            torch.cuda.current_stream().wait_stream(side)
        optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (the DataLoader's pin-memory thread) during the
        # capture do not invalidate it.
        generators = _snapshot_generators()
        try:
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.static_outputs = tuple(body(*self.static_inputs))
        except Exception:
            # A capture that fails half-way leaves the CUDA generators in their capture state, so
            # every later random op (router noise, drop path) would fail eagerly too.
            _restore_generators(generators)
            raise

    def __call__(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Copy ``inputs`` into the static inputs, replay the step, return the static outputs."""
        for static, new in zip(self.static_inputs, inputs):
            static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.static_outputs


def raised_at(exc: BaseException) -> str:
    """``file:line`` of the innermost project frame that raised ``exc`` (where a capture broke).

    A capture fails at the first operation that is illegal inside it (a host read such as
    ``.item()``), and that line is what a report needs, not the frame inside torch.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(_PROJECT_ROOT)]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return "unknown"
    path = Path(frame.filename).resolve()
    shown = path.relative_to(_PROJECT_ROOT) if path.is_relative_to(_PROJECT_ROOT) else path.name
    return f"{shown}:{frame.lineno}"


def _snapshot_generators() -> list:
    """Copies of every CUDA device's default generator state (empty on torch without the API)."""
    gens = list(getattr(torch.cuda, "default_generators", ()))
    if not gens or not hasattr(gens[0], "clone_state"):
        return []
    return [(g, g.clone_state()) for g in gens]


def _restore_generators(snapshot: list) -> None:
    """Put back the states :func:`_snapshot_generators` copied."""
    for generator, state in snapshot:
        generator.graphsafe_set_state(state)


def reset_optimizer_state_(optimizer: torch.optim.Optimizer) -> None:
    """Zero every optimizer state tensor in place (moments, step counters).

    After a graph's warm-up iterations this returns AdamW to its fresh state without moving any
    tensor the captured graph points at.
    """
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                value.zero_()
