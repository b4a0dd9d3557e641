"""Bilinear resizing: dtype kept, logits in fp32, and the compiled form equal to interpolate."""
import pytest
import torch
import torch.nn.functional as F

from models.resize import resize, resize_logits, upsample_by_shifts


def _interpolate(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def test_resize_keeps_the_map_dtype_under_autocast():
    x = torch.randn(1, 4, 6, 6)
    with torch.autocast("cpu", torch.bfloat16):
        y = resize(x.bfloat16(), (12, 12))
        logits = resize_logits(x[:, :1].bfloat16(), (12, 12))
    assert y.dtype == torch.bfloat16 and y.shape == (1, 4, 12, 12)
    assert logits.dtype == torch.float32 and logits.shape == (1, 1, 12, 12)
    assert torch.allclose(resize(x, (12, 12)), _interpolate(x, (12, 12)))


def test_same_size_is_the_identity():
    x = torch.randn(2, 3, 5, 7)
    assert resize(x, (5, 7)) is x
    assert torch.equal(resize_logits(x.bfloat16(), (5, 7)), x.bfloat16().float())


@pytest.mark.parametrize("factors", [(2, 2), (3, 3), (4, 4), (8, 8), (2, 3), (1, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shifted_sums_equal_interpolate_forward_and_backward(factors, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 6)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    size = (7 * factors[0], 6 * factors[1])
    got, want = upsample_by_shifts(x, factors), _interpolate(x, size)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
    grad = torch.randn_like(want)
    (g_got,), (g_want,) = torch.autograd.grad(got, x, grad), torch.autograd.grad(want, x, grad)
    assert torch.allclose(g_got, g_want, atol=1e-4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert got.is_contiguous(memory_format=fmt)


def test_shifted_sums_keep_bf16_and_round_once():
    x = torch.randn(1, 3, 4, 4)
    got = upsample_by_shifts(x.bfloat16(), (4, 4))
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, _interpolate(x.bfloat16().float(), (16, 16)).bfloat16())


@pytest.mark.parametrize("size", [(24, 24), (20, 30)])  # whole factors; not whole (falls back)
def test_compiled_resize_equals_eager(size):
    # aot_eager traces through dynamo and autograd like Inductor, without generating code.
    from torch._dynamo.backends.debugging import aot_eager

    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm.code)
        return aot_eager(gm, example_inputs)

    x = torch.randn(2, 4, 6, 6).to(memory_format=torch.channels_last).requires_grad_(True)
    compiled = torch.compile(lambda t: resize_logits(t, size), backend=backend, fullgraph=True)
    got, want = compiled(x), _interpolate(x, size)
    assert ("interpolate" in graphs[0]) == (size == (20, 30))  # shifted sums for whole factors
    assert torch.allclose(got, want, atol=1e-5)
    grad = torch.randn_like(want)
    (g_got,), (g_want,) = torch.autograd.grad(got, x, grad), torch.autograd.grad(want, x, grad)
    assert torch.allclose(g_got, g_want, atol=1e-4)
