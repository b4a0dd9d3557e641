"""`train_ultimate.py benchmark` on the CPU at a tiny size: every section measured, JSON written."""
import json
import re

import pytest
from click.testing import CliRunner

from train_ultimate import main


def test_benchmark_cpu_writes_every_number(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main,
        ["benchmark", "--device", "cpu", "--backbone", "edgenext_xx_small", "--batch-size", "2", "--img-size", "64",
         "--warmup", "1", "--iters", "1", "--rounds", "1", "--skip-data", "--set", "dim=32", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "ratio to backbone" in result.output
    report = json.loads(out.read_text())
    for key in ("backbone_alone", "model"):
        for metric in ("train_img_per_s", "infer_img_per_s", "latency_b1_ms", "first_train_step_s", "first_infer_s"):
            assert report[key][metric] > 0
    # The first-call times printed are the ones recorded, for the backbone and the model.
    first = next(line for line in result.output.splitlines() if line.startswith("first call"))
    printed = re.findall(r"(\d+\.\d) s", first)
    assert printed == [f"{report[k][m]:.1f}" for k in ("backbone_alone", "model")
                       for m in ("first_train_step_s", "first_infer_s")]
    assert report["ratio_to_backbone"]["train"] > 0 and report["ratio_to_backbone"]["inference"] > 0
    spread = report["ratio_to_backbone_quartiles"]
    assert set(spread) == {"train", "inference"}
    assert all(0 < q["q1"] <= q["median"] <= q["q3"] for q in spread.values())
    for name, q in spread.items():  # the quartiles printed are the ones recorded
        assert f"{name} {q['q1']:.2f}-{q['q3']:.2f}" in result.output
    assert report["model_config"]["dim"] == 32
    backends = report["model_attention_backends"]
    assert backends["auto"]["usable"] and backends["math"]["usable"]
    unit = report["attention_unit"]["results"]
    assert unit["explicit_math"]["fwd_ms"] > 0 and "fwd_speedup_vs_math" in unit["auto"]


def test_benchmark_rejects_bad_override():
    result = CliRunner().invoke(main, ["benchmark", "--device", "cpu", "--set", "dim"])
    assert result.exit_code != 0 and "KEY=VALUE" in result.output


@pytest.mark.parametrize("item, words", [("dim=[", ["dim=[", "wrong type"]), ("foo=1", ["Unknown model config key", "foo"])])
def test_benchmark_override_values_are_checked_before_work(item, words):
    result = CliRunner().invoke(main, ["benchmark", "--device", "cpu", "--set", item])
    assert result.exit_code == 2, result.output
    assert all(w in result.output for w in words) and "Traceback" not in result.output


@pytest.mark.parametrize("args, words", [
    (["--img-size", "100"], ["'--img-size'", "multiple of 32", "96 or 128"]),
    (["--img-size", "0"], ["'--img-size'", "multiple of 32"]),
    (["--batch-size", "-3"], ["'--batch-size'", "x>=1"]),
    (["--batch-size", "0"], ["'--batch-size'", "x>=1"]),
    (["--iters", "0"], ["'--iters'", "x>=1"]),
    (["--rounds", "0"], ["'--rounds'", "x>=1"]),
    (["--warmup", "-1"], ["'--warmup'", "x>=0"]),
    (["--device", "foo"], ["'--device'", "cuda:N"]),
])
def test_benchmark_bad_values_are_usage_errors(args, words):
    result = CliRunner().invoke(main, ["benchmark", "--device", "cpu", *args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    for word in words:
        assert word in result.output, (word, result.output)


def test_report_shows_the_cuda_graph_ratios_when_measured():
    from cli.benchmark import format_report

    row = {"train_img_per_s": 400.0, "infer_img_per_s": 2000.0, "latency_b1_ms": 8.0,
           "latency_b1_cuda_graph_ms": 1.4, "peak_train_mem_mb": 1800.0}
    r = {"gpu": "GPU X", "device": "cuda", "backbone": "edgenext_small", "batch_size": 16, "img_size": 384,
         "dtype": "bfloat16", "compile": False,
         "backbone_alone": {**row, "infer_cuda_graph_img_per_s": 4000.0, "train_cuda_graph_img_per_s": 1000.0},
         "model": {**row, "infer_cuda_graph_img_per_s": 3000.0, "train_cuda_graph_img_per_s": 800.0},
         "ratio_to_backbone": {"train": 1.0, "inference": 1.0, "train_cuda_graph": 0.8, "inference_cuda_graph": 0.75}}
    text = format_report(r)
    ratio_line = text.splitlines()[-1]
    graphed = {part.split()[0]: re.findall(r"\d+\.\d+", part)
               for part in ratio_line.split(", ") if "CUDA graph" in part}
    # Each graphed ratio, with the model's and the backbone's graphed throughput it comes from.
    assert graphed == {"train": ["0.80", "800.0", "1000.0"], "inference": ["0.75", "3000.0", "4000.0"]}
    del r["ratio_to_backbone"]["inference_cuda_graph"], r["ratio_to_backbone"]["train_cuda_graph"]
    assert "CUDA graph" not in format_report(r).splitlines()[-1]


def test_graphed_benchmark_step_trains_like_the_eager_step(monkeypatch):
    # A CPU stand-in for the capture: it runs the body for the warm-up steps, then at every
    # "replay", as a graph replays what it captured. The step it times must be the eager step.
    import torch

    import engine.tools.benchmark as bench
    from models import build_model

    class EagerGraph:
        def __init__(self, body, optimizer, sample_inputs, warmup_steps=3):
            self.body, self.inputs = body, [t.clone() for t in sample_inputs]
            for _ in range(warmup_steps):
                optimizer.zero_grad(set_to_none=True)
                body(*self.inputs)
            optimizer.zero_grad(set_to_none=True)

        def __call__(self, *inputs):
            return self.body(*self.inputs)

    monkeypatch.setattr(bench, "CUDAGraphStep", EagerGraph)
    workloads = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(backbone="edgenext_xx_small", dim=32, router_noise=0.0)
        workloads.append(bench.Workload(model, torch.device("cpu"), 2, 64, None, channels_last=False))
    workloads[1].x.copy_(workloads[0].x)
    eager, graphed = workloads
    before = eager.module.decoder.head[1].weight.detach().clone()
    for _ in range(4):  # the graph's 3 warm-up steps and one replay
        eager.train_step()
    graphed.train_graph()
    assert graphed.graph_train is not None
    for (name, a), b in zip(eager.module.named_parameters(), graphed.module.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert not torch.equal(eager.module.decoder.head[1].weight, before)  # the steps did train


def test_measure_interleaved_pairs_calls_in_alternating_order():
    from engine.tools.benchmark import measure_interleaved, quartiles
    import torch

    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    samples = measure_interleaved(fns, torch.device("cpu"), warmup=1, iters=4)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then 4 passes
    assert [len(v) for v in samples.values()] == [4, 4] and all(t >= 0 for v in samples.values() for t in v)
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == {"q1": 2.0, "median": 3.0, "q3": 4.0}
    assert quartiles([0.5]) == {"q1": 0.5, "median": 0.5, "q3": 0.5}
