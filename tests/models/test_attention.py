"""SDTAEncoder and the attention policy: parity, which path ran, head sizing, errors."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import SDTAEncoder, build_model, set_attention_backend
from models.sdpa_probe import attention_status_line, probe_sdpa_kernels
from models.attention import (
    ATTENTION_BACKENDS,
    choose_num_heads,
    math_attention,
    resolve_attention_backend,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Count calls to F.scaled_dot_product_attention (the module looks it up at call time)."""
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    return calls


@pytest.mark.parametrize("pool", [1, 2])
def test_sdta_sdpa_matches_math_fp32(pool, sdpa_calls):
    torch.manual_seed(0)
    enc = SDTAEncoder(64, num_heads=4, pool=pool).eval()
    # Backends set explicitly: an exported TORCH_SDPA_BACKEND=math must not make both sides math.
    set_attention_backend(enc, "auto")
    x = torch.randn(2, 64, 12, 8)
    with torch.no_grad():
        fused = enc(x)
        assert len(sdpa_calls) == 1, "the SDPA side must call SDPA"
        set_attention_backend(enc, "math")
        explicit = enc(x)
        assert len(sdpa_calls) == 1, "the math side must not call SDPA"
    assert fused.shape == x.shape
    assert torch.allclose(fused, explicit, atol=1e-5), (fused - explicit).abs().max()


def test_math_attention_matches_sdpa_at_seed_shape():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 8, 576, 64) for _ in range(3))
    assert torch.allclose(math_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_math_attention_in_bf16_is_as_accurate_as_sdpa(seed):
    # A peaked attention (scores up to about 35, as in a trained model): scores rounded to bf16
    # made the explicit path ten times less accurate than the fused kernel it is the reference for.
    torch.manual_seed(seed)
    q, k = ((torch.randn(4, 4, 144, 16) * 2.5).bfloat16() for _ in range(2))
    v = torch.randn(4, 4, 144, 16).bfloat16()
    exact = ((q.double() @ k.double().transpose(-2, -1)) * 16**-0.5).softmax(-1) @ v.double()
    out = math_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    sdpa_error = (F.scaled_dot_product_attention(q, k, v).double() - exact).abs().max()
    assert (out.double() - exact).abs().max() <= sdpa_error * 1.25 + 1e-3


def test_sdta_pools_to_attention_tokens(sdpa_calls):
    enc = SDTAEncoder(32, num_heads=8, pool=4).eval()
    set_attention_backend(enc, "auto")  # whatever TORCH_SDPA_BACKEND says
    with torch.no_grad():
        enc(torch.randn(1, 32, 16, 24))
    assert sdpa_calls, "auto policy must call SDPA"
    # (B, heads, tokens, head_dim): 16x24 pooled by 4 -> 4x6 = 24 tokens, head_dim a multiple of 8
    b, nh, n, hd = sdpa_calls[0]
    assert n == 24 and hd % 8 == 0 and nh * hd == 32


def test_math_policy_never_calls_sdpa(sdpa_calls):
    model = build_model(backbone="edgenext_xx_small", dim=32, use_flash_attn=False).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert sdpa_calls == []
    set_attention_backend(model, "auto")
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert len(sdpa_calls) == len(model.config.moe_levels)  # one attention expert per MoE layer


def test_pinned_flash_kernel_runs_on_cpu():
    enc = SDTAEncoder(32, num_heads=2).eval()
    set_attention_backend(enc, "flash")
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        enc(torch.randn(1, 32, 4, 4))
    names = {e.key for e in prof.key_averages()}
    assert any("flash_attention" in n for n in names), names


def test_whole_model_sdpa_matches_math_fp32(sdpa_calls):
    torch.manual_seed(0)
    model = build_model(backbone="edgenext_xx_small", dim=32, num_experts=7, top_k=2, moe_levels=(0, 1, 2, 3)).eval()
    set_attention_backend(model, "auto")  # not left to TORCH_SDPA_BACKEND: both sides must differ
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fused = model(x)
        n_sdpa = len(sdpa_calls)
        assert n_sdpa >= 1, "the SDPA side must call SDPA"
        assert set_attention_backend(model, "math") == len(model.config.moe_levels)
        explicit = model(x)
        assert len(sdpa_calls) == n_sdpa, "the math side must not call SDPA"
    assert torch.allclose(fused, explicit, atol=1e-5), (fused - explicit).abs().max()


def test_env_math_runs_without_sdpa():
    code = textwrap.dedent(
        """
        import torch, torch.nn.functional as F
        def forbidden(*a, **k):
            raise SystemExit("scaled_dot_product_attention was called")
        F.scaled_dot_product_attention = forbidden
        from models import build_model, SDTAEncoder
        m = build_model(backbone="edgenext_xx_small", dim=32, use_flash_attn=True).eval()
        assert all(mod.attn_backend == "math" for mod in m.modules() if isinstance(mod, SDTAEncoder))
        with torch.no_grad():
            print(tuple(m(torch.randn(1, 3, 64, 64)).shape))
        """
    )
    env = dict(os.environ, TORCH_SDPA_BACKEND="math")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "(1, 1, 64, 64)" in out.stdout


@pytest.mark.parametrize("value", ["flash", "EFFICIENT", "cudnn", "auto"])
def test_env_policy_is_read_at_build(monkeypatch, value):
    monkeypatch.setenv("TORCH_SDPA_BACKEND", value)
    assert SDTAEncoder(32).attn_backend == value.lower()
    assert SDTAEncoder(32, use_flash_attn=False).attn_backend == "math"


def test_unknown_backend_lists_valid_values(monkeypatch):
    with pytest.raises(ValueError) as err:
        resolve_attention_backend("fast")
    assert all(name in str(err.value) for name in ATTENTION_BACKENDS)
    monkeypatch.setenv("TORCH_SDPA_BACKEND", "turbo")
    with pytest.raises(ValueError, match="turbo"):
        SDTAEncoder(32)
    with pytest.raises(ValueError, match="Valid values"):
        set_attention_backend(SDTAEncoder(32, use_flash_attn=False), "nope")


@pytest.mark.parametrize("dim,requested", [(64, 8), (72, 8), (96, 8), (48, 8), (304, 8), (8, 8)])
def test_heads_give_head_dim_multiple_of_8(dim, requested):
    heads = choose_num_heads(dim, requested)
    assert 1 <= heads <= requested and dim % heads == 0 and (dim // heads) % 8 == 0


def test_width_not_multiple_of_8_is_an_error():
    with pytest.raises(ValueError, match="multiple of 8"):
        SDTAEncoder(60)


def test_attention_status_line_says_what_runs(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("TORCH_SDPA_BACKEND", "math")
    line = attention_status_line(cpu)  # explicit math, and the setting that chose it
    assert line.startswith("explicit math") and "TORCH_SDPA_BACKEND=math" in line
    monkeypatch.delenv("TORCH_SDPA_BACKEND")
    line = attention_status_line(cpu, use_flash_attn=False)
    assert line.startswith("explicit math") and "use_flash_attn=false" in line
    line = attention_status_line(cpu, torch.float32)
    usable = [k for k, v in probe_sdpa_kernels(cpu, torch.float32).items() if v.usable and k != "math"]
    assert line.startswith("SDPA on cpu [float32]")
    assert all(k in line for k in usable) if usable else "runs PyTorch's math kernel" in line
    # a built model reports its modules' backends, including a kernel that cannot run here
    model = nn.Sequential(SDTAEncoder(32, num_heads=2))
    set_attention_backend(model, "cudnn")
    line = attention_status_line(cpu, torch.float32, model=model)
    # names the pinned kernel, where it was pinned, and that it cannot run on this device
    assert all(word in line for word in ("cudnn", "set_attention_backend", "cannot run", "cpu"))
    auto_model = nn.Sequential(SDTAEncoder(32, num_heads=2))
    assert "cannot run" not in attention_status_line(cpu, torch.float32, model=auto_model)
    assert "no attention" in attention_status_line(cpu, model=nn.Linear(2, 2))
