"""Random-number state: seeding, and capture/restore in a form ``torch.load(weights_only=True)`` reads.

Checkpoints may only hold tensors and plain Python values, so NumPy's state array becomes a
tensor and Python's ``random`` state a list of ints.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, Iterator

import numpy as np
import torch

__all__ = ["capture_rng_state", "derive_seed", "host_rng_untouched", "restore_rng_state", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (e.g. run seed, epoch, sample index).

    Uses NumPy's SeedSequence hashing, so nearby inputs give unrelated seeds.
    """
    state = np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def capture_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors and plain values."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # uint32 values fit in int64
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states restored for the GPUs present)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((
        npy["kind"],
        npy["keys"].numpy().astype(np.uint32),
        npy["pos"],
        npy["has_gauss"],
        npy["cached_gaussian"],
    ))
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        n = min(len(cuda_states), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states[:n]])


@contextlib.contextmanager
def host_rng_untouched() -> Iterator[None]:
    """Run the block and put Python's, NumPy's and torch's CPU random states back as they were.

    For work outside the training step (validation, saving, reports): whatever it draws, the
    training streams continue as if it had not run, so a run is the same whenever it validates
    and a resumed run the same as an uninterrupted one. CUDA generators are left alone: a CUDA
    graph may hold them, and nothing outside the step draws from them.
    """
    python, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
