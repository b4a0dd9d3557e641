"""The CUDA-graph update path of ``train``, run on the CPU with an eager stand-in for the graph.

A capture cannot run without a GPU, so the stand-in records the step body at "capture" and
runs it at every "replay", as a graph replays what it captured. What this checks is the
orchestration around the graph: eager warm-up updates, the capture after them, a new capture
when the stage changes, the learning rates and EMA weight written into device tensors before
each replay, and the host-side counters. A run through that path must train exactly like
an eager run.
"""
import contextlib
import json

import pytest
import torch

import engine.training.setup as setup
import engine.training.step as step
from engine.checkpoint import load_checkpoint
from engine.training.losses import CODLoss
from _train_helpers import TINY_ARGS, RecordOps, make_dataset, run_cli


class _EagerGraph:
    """CUDAGraphStep's interface; "capture" keeps the body, "replay" runs it on the static inputs."""

    captures = 0
    replayed_ops = []

    def __init__(self, body, optimizer, sample_inputs, warmup_steps=0):
        assert warmup_steps == 0  # the trainer's own eager updates are the warm-up
        self.body = body
        self.static_inputs = [t.detach().clone() for t in sample_inputs]
        type(self).captures += 1

    def __call__(self, *inputs):
        for static, new in zip(self.static_inputs, inputs):
            static.copy_(new)
        with RecordOps() as recorded:
            out = self.body(*self.static_inputs)
        type(self).replayed_ops.extend(recorded.ops)
        return out


class _Stream:
    def wait_stream(self, other):
        pass


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    monkeypatch.setattr(setup, "resolve_cuda_graphs", lambda value, rt, accumulation: (True, "on"))
    monkeypatch.setattr(step, "CUDAGraphStep", _EagerGraph)
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    _EagerGraph.captures = 0
    _EagerGraph.replayed_ops = []
    return _EagerGraph


def _train(data, out, *extra):
    args = ["train", "--dataset-path", str(data), "--checkpoint-dir", str(out), *TINY_ARGS,
            "--epochs", "3", "--set", "train.cuda_graphs=auto", *extra]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    return result


def test_graphed_updates_train_like_eager_ones(tmp_path, graphs_on_cpu, monkeypatch):
    data = make_dataset(tmp_path / "data", n_train=12, n_test=2)
    # 9 training images at batch 4: 2 updates an epoch; stage 1 (frozen backbone) is epoch 1.
    graphed = _train(data, tmp_path / "graphed")
    assert "CUDA graphs: on" in graphed.output
    # stage 1: 2 eager updates (never captured); stage 2: 3 eager, then one capture for the rest
    assert graphs_on_cpu.captures == 1
    # no host reads in the captured body (.item() breaks a capture; eagerly it waits for the GPU)
    assert "_local_scalar_dense" not in graphs_on_cpu.replayed_ops

    # The same run with eager updates and the same (capturable) optimizer: the stand-ins stay
    # installed but are not used.
    build = setup.build_optimizer
    monkeypatch.setattr(setup, "resolve_cuda_graphs", lambda value, rt, accumulation: (False, "off"))
    monkeypatch.setattr(setup, "build_optimizer",
                        lambda *args, **kw: build(*args[:5], capturable_on=torch.device("cpu")))
    _train(data, tmp_path / "eager")

    a, b = load_checkpoint(tmp_path / "graphed" / "last.pt"), load_checkpoint(tmp_path / "eager" / "last.pt")
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)
    rows_a = [json.loads(l) for l in (tmp_path / "graphed" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (tmp_path / "eager" / "metrics.jsonl").read_text().splitlines()]
    for ra, rb in zip(rows_a, rows_b):
        if "step" in ra:
            assert ra["step"] == rb["step"] and ra["lr"] == rb["lr"] and ra["train_loss"] == rb["train_loss"]


class _FailingCompiled(torch.nn.Module):
    """A compiled model that fails at its first call, as a compiler error would."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        raise RuntimeError("backend compiler failed (stand-in)")


class _CompiledLoss(torch.nn.Module):
    """A compiled loss stand-in: counts its calls; ``_orig_mod`` as torch.compile's wrapper has."""

    def __init__(self, loss):
        super().__init__()
        self._orig_mod = loss
        self.calls = 0

    def forward(self, *args):
        self.calls += 1
        return self._orig_mod(*args)


@pytest.mark.parametrize("compiler_fails", [False, True])
def test_compiled_step_is_captured_too(tmp_path, graphs_on_cpu, monkeypatch, compiler_fails):
    # A CPU stand-in for the compiler: the real one's step is captured like an eager one on a GPU.
    compiled = []

    def fake_compile(module):
        if isinstance(module, CODLoss):
            compiled.append(_CompiledLoss(module))
        else:
            compiled.append(_FailingCompiled(module) if compiler_fails else module)
        return compiled[-1]

    monkeypatch.setattr(setup, "compile_model", fake_compile)
    data = make_dataset(tmp_path / "data", n_train=12, n_test=2)
    result = _train(data, tmp_path / "run", "--compile")
    assert len(compiled) == 2  # the model and its loss
    # A failed compile falls back to the eager model and the eager loss.
    assert (compiled[1].calls == 0) == compiler_fails
    assert "CUDA graphs: on" in result.output
    # the fallback is said, with the compiler's error type, only when it happens
    assert ("torch.compile failed" in result.output and "RuntimeError" in result.output) == compiler_fails
    assert graphs_on_cpu.captures == 1  # stage 2's capture, of the eager model after a failed compile
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 6
