"""The predict benchmark (``benchmarks/benchmark_predict.py``) at tiny sizes on CPU."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.benchmark_predict import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "dim=16", "--set", "num_experts=2", "--set", "top_k=1", "--set", "pretrained=false"]


def test_benchmark_predict_writes_its_json_and_a_summary(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main,
        ["--device", "cpu", "--set", "backbone=edgenext_xx_small", "--img-size", "64", "--num-images", "5",
         "--image-px", "90", "--batch-size", "2", "--num-workers", "0", "--repeats", "2", *TINY, "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    # The summary shows the recorded in-process rate and time and the fresh process's time.
    in_process, fresh = r["in_process"], r["fresh_process"]
    for shown in (f"{in_process['img_per_s']:.0f} img/s", f"{in_process['seconds']:.2f} s",
                  f"{fresh['seconds']:.1f} s", f"{fresh['img_per_s']:.0f} img/s"):
        assert re.search(rf"(?<![\d.]){re.escape(shown)}", result.output), shown
    assert r["images"] == 5 and r["image_shape"] == [90, 90] and r["img_size"] == 64 and r["num_workers"] == 0
    assert len(r["in_process"]["runs_s"]) == 2 and r["in_process"]["img_per_s"] > 0
    for key in ("import_torch_s", "import_project_s", "cuda_init_s", "model_load_s", "warm_up_s", "total_s"):
        assert r["startup"][key] >= 0, key
    assert r["fresh_process"]["seconds"] > 0 and r["api_latency_b1_ms"]["median"] > 0


def test_benchmark_predict_script_runs_the_same_measurement(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "benchmark_predict.py"), "--device", "cpu", "--num-images", "3",
           "--image-px", "80", "--img-size", "64", "--batch-size", "2", "--num-workers", "0", "--latency-iters", "2",
           "--repeats", "1", "--no-fresh-process", "--set", "backbone=edgenext_xx_small", *TINY, "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["images"] == 3 and r["device"] == "cpu" and r["fresh_process"] is None
    assert r["in_process"]["img_per_s"] > 0 and r["startup"]["model_load_s"] > 0


def _tiny_checkpoint(path):
    from engine.config import parse_set_overrides
    from benchmarks.predict_speed import _random_checkpoint

    return _random_checkpoint(path, 64, {"backbone": "edgenext_xx_small", **parse_set_overrides(TINY[1::2])})


PREDICT = ["--device", "cpu", "--img-size", "64", "--batch-size", "2", "--num-workers", "0", "--repeats", "1",
           "--latency-iters", "2"]


def test_benchmark_predict_takes_paths_relative_to_the_current_folder(tmp_path, monkeypatch):
    from benchmarks.predict_speed import write_test_images

    _tiny_checkpoint(tmp_path / "run" / "best.pt")
    write_test_images(tmp_path / "photos", 2, 64)
    monkeypatch.chdir(tmp_path)  # not the repository root, where the fresh `predict` process runs
    result = CliRunner().invoke(main, [*PREDICT, "--checkpoint", "run/best.pt", "--folder", "photos",
                                       "--json", "bp.json"])
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "bp.json").read_text())
    assert r["images"] == 2 and r["fresh_process"]["seconds"] > 0


def test_benchmark_predict_failing_fresh_process_is_a_message_quoting_its_error(tmp_path, monkeypatch):
    from benchmarks import predict_speed

    checkpoint = _tiny_checkpoint(tmp_path / "best.pt")
    real = predict_speed._fresh_predict

    def checkpoint_gone(path, *args, **kwargs):
        path.unlink()  # after the in-process runs: a real `predict` process that fails
        return real(path, *args, **kwargs)

    monkeypatch.setattr(predict_speed, "_fresh_predict", checkpoint_gone)
    result = CliRunner().invoke(main, [*PREDICT, "--checkpoint", str(checkpoint), "--num-images", "2",
                                       "--image-px", "64"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # not a traceback
    assert "fresh process failed" in result.output and "Checkpoint not found" in result.output


def test_missing_checkpoint_or_folder_is_refused_before_any_timing(tmp_path, monkeypatch):
    import torch

    from benchmarks import predict_speed

    monkeypatch.setattr(predict_speed, "startup_seconds", lambda device: pytest.fail("timing started"))
    small = dict(num_images=1, image_px=32, img_size=64)
    settings = predict_speed.PredictBenchSettings(checkpoint=tmp_path / "missing.pt", **small)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        predict_speed.run_predict_benchmark(torch.device("cpu"), settings)
    settings = predict_speed.PredictBenchSettings(folder=tmp_path / "no_such_folder", **small)
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        predict_speed.run_predict_benchmark(torch.device("cpu"), settings)
