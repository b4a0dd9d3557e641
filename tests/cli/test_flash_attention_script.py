"""scripts/test_flash_attention.py and engine.tools.attention_check on a tiny checkpoint."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from datasets import write_synthetic_dataset
from engine.tools.attention_check import compare_backends, kernel_from_profile, unit_check
from engine.checkpoint import save_checkpoint
from models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "test_flash_attention.py")


def _as_if_trained(model, never_attention=False):
    """Leave the zero init of the experts and router behind, as training does."""
    with torch.no_grad():
        for name, p in model.moe.named_parameters():
            p.add_(torch.randn_like(p) * 0.3)
        if never_attention:  # a router that can never pick the attention expert
            for moe in model.moe.values():
                moe.router.gate.bias[1] = -1e4  # expert 1 is "attention"
    return model


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("flash")
    torch.manual_seed(0)
    model = build_model(backbone="edgenext_xx_small", dim=32, moe_levels=(1, 3))
    _as_if_trained(model)
    ckpt = save_checkpoint(
        {"model_config": model.config.to_dict(), "model": model.state_dict(), "ema": None, "epoch": 3,
         "config": {"data": {"img_size": 64}}},
        root / "best.pt",
    )
    write_synthetic_dataset(root / "data", n_train=1, n_test=4, img_size=64, seed=3, progress=False)
    return ckpt, root / "data", model


def _run(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_script_passes_and_reports_kernels(tiny_run, tmp_path):
    ckpt, data, _ = tiny_run
    out_json = tmp_path / "report.json"
    proc = _run(["--checkpoint", str(ckpt), "--dataset-path", str(data), "--num-samples", "4",
                 "--batch-size", "2", "--device", "cpu", "--json", str(out_json)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout
    assert "USDT" not in proc.stderr and "profiler_start" not in proc.stderr  # the profiler's native chatter
    report = json.loads(out_json.read_text())
    assert report["passed"] is True and report["num_samples"] == 4
    assert report["reference"]["kernel"] == "explicit"
    auto = report["backends"]["auto"]
    for key in ("max_abs_diff", "mean_abs_diff", "delta_Sm", "delta_MAE", "ms", "peak_mem_mb", "kernel"):
        assert key in auto
    assert auto["kernel"] == "flash"  # PyTorch's CPU flash kernel, read from the profiler
    assert auto["max_abs_diff"] <= 1e-4
    assert any(r["shape"] == [16, 4, 144, 16] for r in report["unit_check"])  # the default model at 384 px
    routing = report["attention_routing"]
    assert set(routing) == {"stride8", "stride32"} and report["vacuous"] is False
    assert all(0 <= r["samples"] <= 4 and 0 <= r["token_share"] <= 1 for r in routing.values())
    assert any(r["samples"] > 0 and 0 < r["mean_gate"] <= 1 for r in routing.values())
    assert "attention expert at stride8" in proc.stdout and "attention expert at stride32" in proc.stdout


def test_script_reports_vacuous_check(tiny_run, tmp_path):
    _, data, _ = tiny_run
    torch.manual_seed(1)
    model = _as_if_trained(build_model(backbone="edgenext_xx_small", dim=32, moe_levels=(2,)), never_attention=True)
    assert model.expert_names[1] == "attention"
    ckpt = save_checkpoint(
        {"model_config": model.config.to_dict(), "model": model.state_dict(), "ema": None, "epoch": 1,
         "config": {"data": {"img_size": 64}}},
        tmp_path / "never.pt",
    )
    out_json = tmp_path / "report.json"
    proc = _run(["--checkpoint", str(ckpt), "--dataset-path", str(data), "--num-samples", "4",
                 "--batch-size", "2", "--device", "cpu", "--json", str(out_json)])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "PASSED" not in proc.stdout and "INCONCLUSIVE" in proc.stdout
    report = json.loads(out_json.read_text())
    assert report["vacuous"] is True and report["passed"] is False
    assert report["attention_routing"]["stride16"]["samples"] == 0


def test_script_honours_math_policy(tiny_run, tmp_path):
    from engine.tools.attention_check import SDPA_BACKENDS

    ckpt, data, _ = tiny_run
    out_json = tmp_path / "report.json"
    proc = _run(["--checkpoint", str(ckpt), "--dataset-path", str(data), "--num-samples", "2", "--device", "cpu",
                 "--json", str(out_json)], {"TORCH_SDPA_BACKEND": "math"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out_json.read_text())
    # No SDPA backend runs; each is skipped, naming the setting that forces explicit attention.
    assert report["backends"] == {} and set(report["skipped"]) == set(SDPA_BACKENDS)
    assert all("TORCH_SDPA_BACKEND=math" in why for why in report["skipped"].values())


class _Payload:
    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.mark}",))


def test_script_refuses_pickled_checkpoint(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model_config": {}, "model": _Payload(tmp_path / "pwned")}, evil)
    proc = _run(["--checkpoint", str(evil), "--device", "cpu"])
    assert proc.returncode != 0
    assert "Refused" in proc.stdout + proc.stderr
    assert not (tmp_path / "pwned").exists()


def test_script_bad_device_is_a_usage_error(tmp_path):
    proc = _run(["--checkpoint", str(tmp_path / "missing.pt"), "--device", "gpu0"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--device" in proc.stderr and "gpu0" in proc.stderr


def _script_command():
    """The script's click command, imported in this process (a subprocess per case costs seconds)."""
    spec = importlib.util.spec_from_file_location("test_flash_attention_script_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("option, value, words", [
    ("--num-samples", "0", "x>=1"),  # was an IndexError at the warm-up call
    ("--num-samples", "-3", "x>=1"),  # was read as "all but the last 3"
    ("--batch-size", "0", "x>=1"),  # was a ValueError from range()
    ("--tolerance", "nan", "not a finite number"),  # was a FAILED verdict for every backend
    ("--tolerance", "-1", "x>=0"),
    ("--img-size", "50", "multiple of 32"),
])
def test_script_bad_options_are_usage_errors(tmp_path, option, value, words):
    result = CliRunner().invoke(_script_command(), ["--checkpoint", str(tmp_path / "missing.pt"), option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output and words in result.output and "Traceback" not in result.output


def test_a_diverging_backend_fails(monkeypatch):
    # Two experts, both always used: the attention expert's output always reaches the logits.
    model = _as_if_trained(build_model(backbone="edgenext_xx_small", dim=32, num_experts=2, top_k=2, moe_levels=(2,))).eval()
    real = F.scaled_dot_product_attention

    def off_by_a_bit(q, k, v, *args, **kwargs):
        return real(q, k, v, *args, **kwargs) + 10.0

    monkeypatch.setattr(F, "scaled_dot_product_attention", off_by_a_bit)
    batches = [torch.randn(2, 3, 64, 64)]
    report = compare_backends(model, batches, device=torch.device("cpu"), dtype_name="fp32")
    assert report["passed"] is False
    assert report["backends"]["auto"]["max_abs_diff"] > 1e-4


def test_half_precision_check_runs_only_the_attention_core_in_that_dtype(monkeypatch):
    from engine.tools.attention_check import attention_core_precision

    model = _as_if_trained(build_model(backbone="edgenext_xx_small", dim=32, num_experts=2, top_k=2, moe_levels=(3,))).eval()
    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, k, v, *a, **kw: seen.append(q.dtype) or real(q, k, v, *a, **kw))
    head_inputs = []
    model.decoder.head.register_forward_hook(lambda m, args, out: head_inputs.append((args[0].dtype, out.dtype)))
    with torch.inference_mode(), attention_core_precision(model, torch.device("cpu"), torch.bfloat16):
        logits = model(torch.randn(2, 3, 64, 64))
    assert seen == [torch.bfloat16]  # the kernel got half-precision q, k, v
    assert head_inputs == [(torch.float32, torch.float32)] and logits.dtype == torch.float32  # the rest stayed fp32
    encoder = next(m for m in model.modules() if type(m).__name__ == "SDTAEncoder")
    assert "forward" not in vars(encoder)  # the module is left as it was
    with torch.inference_mode():
        model(torch.randn(1, 3, 64, 64))
    assert seen == [torch.bfloat16, torch.float32]


def test_ieee_float32_turns_tf32_off_and_restores_it():
    from engine.tools.attention_check import ieee_float32

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with pytest.raises(RuntimeError):
            with ieee_float32():
                assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
                raise RuntimeError("restored on errors too")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_unit_check_covers_seed_shape():
    rows = unit_check(torch.device("cpu"), "fp32", shapes=((2, 8, 576, 64),))
    assert rows and all(r["passed"] for r in rows)


@pytest.mark.parametrize(
    "names,expected",
    [
        (["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu"], "flash"),
        (["aten::_scaled_dot_product_efficient_attention"], "efficient"),
        (["aten::_scaled_dot_product_cudnn_attention"], "cudnn"),
        (["aten::_scaled_dot_product_attention_math"], "math"),
        (["aten::softmax", "aten::matmul"], "explicit"),
    ],
)
def test_kernel_names(names, expected):
    assert kernel_from_profile(names) == expected
