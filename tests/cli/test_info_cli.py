"""`train_ultimate.py info` reports the attention status."""
import json
import os
import subprocess
import sys

from click.testing import CliRunner

from train_ultimate import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_info_reports_attention_status(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCH_SDPA_BACKEND", raising=False)
    out_json = tmp_path / "info.json"
    result = CliRunner().invoke(main, ["info", "--backbone", "edgenext_xx_small", "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    assert "Flash Attention" not in result.output  # the old line claimed it whatever ran
    assert "SDPA kernel flash" in result.output and "Model: edgenext_xx_small" in result.output
    report = json.loads(out_json.read_text())
    assert report["attention_policy"] == "auto" and report["sdpa_kernels"]["math"]["usable"]
    assert report["attention_status"] in result.output  # the printed status is the one recorded
    assert report["attention_status"].startswith("SDPA")
    fused = [k for k in ("flash", "efficient", "cudnn") if report["sdpa_kernels"][k]["usable"]]
    # The status names exactly the fused kernels that ran in the probe, or says none can.
    if fused:
        assert all(k in report["attention_status"] for k in fused)
    else:
        assert not report["attention_fused"] and "math" in report["attention_status"]
    assert report["model"]["params"] > 0


def test_info_under_math_policy_in_a_fresh_process(tmp_path):
    env = dict(os.environ, TORCH_SDPA_BACKEND="math")
    out_json = tmp_path / "info.json"
    out = subprocess.run(
        [sys.executable, "train_ultimate.py", "info", "--backbone", "edgenext_xx_small", "--json", str(out_json)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out_json.read_text())
    assert report["attention_policy"] == "math"
    # The status names explicit attention and the setting that chose it, and is the one printed.
    assert report["attention_status"].startswith("explicit math attention")
    assert "TORCH_SDPA_BACKEND=math" in report["attention_status"]
    assert report["attention_status"] in out.stdout
    assert "Flash Attention" not in out.stdout


def test_bad_env_value_is_a_clean_error(monkeypatch):
    monkeypatch.setenv("TORCH_SDPA_BACKEND", "fastest")
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code != 0
    assert "'fastest'" in result.output  # the bad value, and every valid one
    assert all(name in result.output for name in ("auto", "flash", "efficient", "cudnn", "math"))


def test_info_and_benchmark_default_to_the_backbone_train_uses():
    from engine.config import load_default_config

    train_default = load_default_config()["model"]["backbone"]
    for name in ("info", "benchmark"):
        option = next(p for p in main.commands[name].params if p.name == "backbone")
        assert option.default == train_default, name
