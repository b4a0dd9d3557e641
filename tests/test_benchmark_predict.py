"""The predict benchmark (``benchmark --predict-only`` and ``scripts/benchmark_predict.py``) at tiny sizes on CPU."""
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from train_ultimate import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "dim=16", "--set", "num_experts=2", "--set", "top_k=1", "--set", "pretrained=false"]


def test_benchmark_predict_section_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main,
        ["benchmark", "--predict-only", "--device", "cpu", "--backbone", "edgenext_xx_small", "--img-size", "64",
         "--predict-images", "5", "--predict-image-px", "90", "--predict-batch-size", "2", "--num-workers", "0",
         "--predict-repeats", "2", *TINY, "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "first file read to last mask written" in result.output and "fresh process" in result.output
    r = json.loads(out.read_text())["predict"]
    assert r["images"] == 5 and r["image_shape"] == [90, 90] and r["img_size"] == 64 and r["num_workers"] == 0
    assert len(r["in_process"]["runs_s"]) == 2 and r["in_process"]["img_per_s"] > 0
    for key in ("import_torch_s", "import_project_s", "cuda_init_s", "model_load_s", "warm_up_s", "total_s"):
        assert r["startup"][key] >= 0, key
    assert r["fresh_process"]["seconds"] > 0 and r["api_latency_b1_ms"]["median"] > 0


def test_benchmark_predict_script_runs_the_same_measurement(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark_predict.py"), "--device", "cpu", "--num-images", "3",
           "--image-px", "80", "--img-size", "64", "--batch-size", "2", "--num-workers", "0", "--latency-iters", "2",
           "--repeats", "1", "--no-fresh-process", "--set", "backbone=edgenext_xx_small", *TINY, "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["images"] == 3 and r["device"] == "cpu" and r["fresh_process"] is None
    assert r["in_process"]["img_per_s"] > 0 and r["startup"]["model_load_s"] > 0
