"""`train_ultimate.py benchmark` on the CPU at a tiny size: every section measured, JSON written."""
import json

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
        for metric in ("train_img_per_s", "infer_img_per_s", "latency_b1_ms"):
            assert report[key][metric] > 0
    assert report["ratio_to_backbone"]["train"] > 0 and report["ratio_to_backbone"]["inference"] > 0
    assert report["model_config"]["dim"] == 32
    backends = report["model_attention_backends"]
    assert backends["auto"]["usable"] and backends["math"]["usable"]
    unit = report["attention_unit"]["results"]
    assert unit["explicit_math"]["fwd_ms"] > 0 and "fwd_speedup_vs_math" in unit["auto"]


def test_benchmark_rejects_bad_override():
    result = CliRunner().invoke(main, ["benchmark", "--device", "cpu", "--set", "dim"])
    assert result.exit_code != 0 and "KEY=VALUE" in result.output
