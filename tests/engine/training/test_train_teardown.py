"""The run ends at once: loader workers and the cached validation split are released before the summary."""
import multiprocessing
import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from _train_helpers import TINY_ARGS, make_dataset, run_cli


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", n_train=8, n_test=2)


class _SlowSet(Dataset):
    """Each item takes 0.5 s: PyTorch's own shutdown waits for the batch each worker has in hand."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(0.5)
        return torch.zeros(3, 8, 8)


def test_shutdown_loader_does_not_wait_for_busy_workers():
    from engine.training.loaders import shutdown_loader

    loader = DataLoader(_SlowSet(), batch_size=4, num_workers=2, persistent_workers=True, prefetch_factor=4)
    it = iter(loader)
    next(it)  # both workers are now busy prefetching batches of 2 s each
    workers = list(loader._iterator._workers)
    t0 = time.perf_counter()
    shutdown_loader(loader)
    assert time.perf_counter() - t0 < 1.5
    assert not any(w.is_alive() for w in workers) and loader._iterator is None
    shutdown_loader(loader)  # twice is harmless


def test_run_leaves_no_worker_processes_and_times_its_teardown(tiny_data, tmp_path):
    import json

    out = tmp_path / "run"
    args = [a for a in TINY_ARGS]
    args[args.index("--num-workers") + 1] = "1"
    result = run_cli(["train", "--dataset-path", str(tiny_data), "--checkpoint-dir", str(out), *args,
                      "--epochs", "1", "--stage1-epochs", "0"])
    assert result.exit_code == 0, result.output
    assert not [p for p in multiprocessing.active_children() if p.is_alive()], "loader workers outlived the run"
    summary = json.loads((out / "run_summary.json").read_text())
    assert 0.0 < summary["teardown_s"] < 5.0
    assert summary["images_per_wall_s"] == pytest.approx(summary["images_trained"] / summary["total_s"], abs=0.01)
