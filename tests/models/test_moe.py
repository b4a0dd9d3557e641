"""MoE routing: gradients reach every expert and the router, static shapes, no sync."""
import pytest
import torch

from models import build_model
from models.experts import EXPERT_TYPES, build_experts
from models.moe import MoELayer


def _moe(dim=32, top_k=2, routing="token", trained=True):
    torch.manual_seed(0)
    moe = MoELayer(build_experts(list(EXPERT_TYPES), dim, pool=2), dim, top_k=top_k, routing=routing)
    if trained:  # leave the zero init behind, as after a few optimiser steps
        with torch.no_grad():
            for p in moe.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return moe


def _randomise_(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return module


@pytest.mark.parametrize("pool", [1, 2])
@pytest.mark.parametrize("name", list(EXPERT_TYPES))
def test_each_expert_starts_at_zero_update(name, pool):
    expert = build_experts([name], 32, pool=pool)[0]
    y = expert(torch.randn(2, 32, 8, 12))
    assert y.shape == (2, 32, 8, 12) and torch.count_nonzero(y) == 0


@pytest.mark.parametrize("name", list(EXPERT_TYPES))
def test_each_expert_keeps_shape_and_backprops(name):
    expert = _randomise_(build_experts([name], 32, pool=2)[0])
    x = torch.randn(2, 32, 8, 12, requires_grad=True)
    y = expert(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_new_moe_layer_is_identity():
    moe = _moe(trained=False).eval()
    x = torch.randn(3, 32, 8, 8)
    with torch.no_grad():
        assert torch.equal(moe(x).features, x)


def test_token_routing_differs_across_pixels_image_routing_does_not():
    x = torch.randn(2, 32, 8, 8)
    for routing, per_pixel in (("token", True), ("image", False)):
        moe = _moe(routing=routing).eval()
        with torch.no_grad():
            _, gates, dispatch = moe.route(moe.norm(x))
        assert dispatch.sum(dim=1).eq(2).all()  # top-2 everywhere
        varies = not torch.equal(gates.amax(dim=(2, 3)), gates.amin(dim=(2, 3)))
        assert varies == per_pixel
        assert gates.shape[2:] == ((8, 8) if per_pixel else (1, 1))


def test_every_expert_and_router_get_gradients_over_steps():
    torch.manual_seed(0)
    model = build_model(backbone="edgenext_xx_small", dim=32, num_experts=7, top_k=2, moe_levels=(0, 1, 2, 3)).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    touched = {}
    for _ in range(4):
        opt.zero_grad()
        out = model(torch.randn(4, 3, 64, 64))
        (out.logits.sigmoid().mean() + out.aux_loss).backward()
        for name, p in model.named_parameters():
            if ".experts." in name or ".router." in name:
                key = name.split(".weight")[0].split(".bias")[0]
                key = ".".join(key.split(".")[:4])  # moe.<level>.experts.<e> / moe.<level>.router.<x>
                touched[key] = touched.get(key, 0.0) + (p.grad.abs().sum().item() if p.grad is not None else 0.0)
        opt.step()
    experts = [k for k in touched if ".experts." in k]
    routers = [k for k in touched if ".router." in k]
    assert len(experts) == 4 * 7 and routers
    assert all(touched[k] > 0 for k in experts + routers), {k: v for k, v in touched.items() if v == 0}


def test_balance_loss_has_router_gradient():
    moe = _moe().train()
    out = moe(torch.randn(8, 32, 8, 8))
    out.aux_loss.backward()
    assert moe.router.gate.weight.grad is not None and moe.router.gate.weight.grad.abs().sum() > 0
    assert out.load.shape == (7,) and torch.isclose(out.load.sum(), torch.tensor(2.0))


def test_balance_loss_is_one_when_balanced():
    from models.moe import switch_balance_loss

    probs = torch.full((4, 4), 0.25)
    dispatch = torch.eye(4)
    assert torch.isclose(switch_balance_loss(probs, dispatch, 1), torch.tensor(1.0))


def test_top1_gate_keeps_router_gradient_from_task_loss():
    moe = _moe(top_k=1).train()
    moe(torch.randn(4, 32, 8, 8)).features.mean().backward()
    assert moe.router.gate.weight.grad.abs().sum() > 0


def test_eval_output_does_not_depend_on_batch():
    moe = _moe().eval()
    x = torch.randn(5, 32, 8, 8)
    with torch.no_grad():
        batched = moe(x).features
        single = torch.cat([moe(x[i : i + 1]).features for i in range(5)])
    assert torch.allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_moe_traces_without_graph_breaks(training):
    moe = _moe().train(training)
    explanation = torch._dynamo.explain(moe)(torch.randn(8, 32, 8, 8))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_balance_statistics_only_in_training():
    moe = _moe()
    x = torch.randn(2, 32, 8, 8)
    trained = moe.train()(x)
    assert trained.aux_loss.ndim == 0 and trained.load.shape == (7,)
    with torch.no_grad():
        evaluated = moe.eval()(x)
    assert evaluated.aux_loss is None and evaluated.load is None


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_gates_are_renormalised_top_k_probabilities(top_k):
    moe = _moe(top_k=top_k).eval()
    with torch.no_grad():
        probs, gates, dispatch = moe.route(moe.norm(torch.randn(2, 32, 6, 6)))
    top_p, top_i = probs.topk(top_k, dim=1)  # (B, k, h, w)
    if top_k > 1:
        top_p = top_p / top_p.sum(dim=1, keepdim=True)
    expected = torch.zeros_like(probs).scatter(1, top_i, top_p)
    assert torch.allclose(gates, expected, atol=1e-6)
    assert torch.equal(dispatch, expected > 0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_edge_expert_applies_three_filters_to_every_channel(channels_last):
    expert = _randomise_(build_experts(["edge"], 16)[0])
    x = torch.randn(2, 16, 7, 9)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    # The reference: a grouped conv with three output channels per input channel.
    edges = torch.nn.functional.conv2d(x, expert.kernels, padding=1, groups=16)  # (B, 3C, H, W)
    with torch.no_grad():
        assert torch.allclose(expert(x), expert.fuse(edges.abs()), atol=1e-5)


def test_context_expert_matches_resized_pyramid_bins():
    expert = _randomise_(build_experts(["context"], 32)[0])
    x = torch.randn(2, 32, 8, 12)
    F = torch.nn.functional
    with torch.no_grad():
        r = expert.reduce(x)
        context = sum(
            F.interpolate(F.adaptive_avg_pool2d(r, b), size=(8, 12), mode="bilinear", align_corners=False)
            for b in expert.bins
        )
        assert torch.allclose(expert(x), expert.fuse(F.gelu(torch.cat([x, context], dim=1))), atol=1e-5)


class _Spy(torch.nn.Module):
    """An expert that records the dtype it sees and whether autocast is on, and returns zeros."""

    def __init__(self, runs_under_autocast=False):
        super().__init__()
        self.runs_under_autocast = runs_under_autocast
        self.seen = []

    def forward(self, x):
        self.seen.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return torch.zeros_like(x) if not torch.is_autocast_enabled("cpu") else torch.zeros_like(x, dtype=torch.bfloat16)


@pytest.mark.parametrize("training", [True, False])
def test_experts_compute_in_float32_under_autocast_except_those_that_ask(training):
    plain, under = _Spy(), _Spy(runs_under_autocast=True)
    moe = MoELayer([plain, under], 8, top_k=1).train(training)
    x = torch.randn(2, 8, 4, 4).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = moe(x)
    assert plain.seen == [(torch.float32, False)]  # no per-weight casts in the expert layer
    assert under.seen == [(torch.float32, True)]  # e.g. attention: half-precision SDPA kernels
    assert out.features.dtype == torch.bfloat16  # the residual stream keeps the caller's dtype
    # Without autocast no context is entered and every expert sees the input as it is.
    moe(x.float())
    assert plain.seen[-1] == under.seen[-1] == (torch.float32, False)


@pytest.mark.parametrize("training", [True, False])
def test_moe_under_autocast_matches_float32(training):
    moe = _moe().train(training)
    x = torch.randn(4, 32, 8, 8)
    torch.manual_seed(1)  # the same router noise in both calls
    reference = moe(x).features
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = moe(x.to(torch.bfloat16))
    assert mixed.features.dtype == torch.bfloat16
    # The input and the attention expert are bf16; the rest of the layer is float32.
    assert torch.allclose(mixed.features.float(), reference, atol=0.1, rtol=0.02)


def test_half_precision_layer_runs_in_its_own_dtype():
    moe = _moe().eval().to(torch.bfloat16)
    out = moe(torch.randn(2, 32, 8, 8, dtype=torch.bfloat16)).features
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_moe_under_autocast_traces_without_graph_breaks():
    moe = _moe()

    def run(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return moe(x)

    explanation = torch._dynamo.explain(run)(torch.randn(8, 32, 8, 8))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_pause_autocast_turns_it_off_and_reports_its_dtype():
    from models.precision import pause_autocast

    paused, dtype = pause_autocast("cpu")
    assert dtype is None  # nothing to pause
    with torch.autocast("cpu", dtype=torch.bfloat16):
        paused, dtype = pause_autocast("cpu")
        with paused:
            assert not torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu")
    assert dtype == torch.bfloat16
