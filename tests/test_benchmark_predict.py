"""``scripts/benchmark_predict.py`` runs end to end on CPU at tiny sizes and reports JSON."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_predict_script_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark_predict.py"), "--device", "cpu", "--num-images", "6",
           "--image-px", "80", "--img-size", "64", "--batch-size", "2", "--num-workers", "0", "--latency-iters", "3",
           "--set", "backbone=edgenext_xx_small", "--set", "dim=16", "--set", "num_experts=2", "--set", "top_k=1",
           "--set", "pretrained=false", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["images"] == 6 and r["image_shape"] == [80, 80] and r["short_run"]["images"] == 4
    assert r["end_to_end"]["img_per_s"] > 0 and r["api_latency_b1_ms"]["median"] > 0
    assert r["device"] == "cpu" and "steady_state" in r
