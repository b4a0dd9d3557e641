"""CamoXpert assembly: shapes for every backbone, outputs, config, input checks."""
import pytest
import torch

from models import SUPPORTED_BACKBONES, CamoXpertConfig, CamoXpertOutput, build_model, count_parameters


def _leave_zero_init(model):
    """Perturb the MoE (experts and routers start at zero) as a few optimiser steps would."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.moe.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("backbone", SUPPORTED_BACKBONES)
def test_shapes_every_backbone_non_square(backbone):
    torch.manual_seed(0)
    model = build_model(backbone=backbone, num_experts=7, top_k=2, use_flash_attn=True, dim=32, moe_levels=(0, 1, 2, 3))
    _leave_zero_init(model)
    x = torch.randn(2, 3, 64, 96)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 1, 64, 96) and torch.isfinite(logits).all()
    model.train()
    out = model(x)
    assert isinstance(out, CamoXpertOutput)
    assert out.logits.shape == (2, 1, 64, 96)
    assert len(out.side_logits) == 4 and all(s.shape == (2, 1, 16, 24) for s in out.side_logits)
    assert out.aux_loss.ndim == 0 and torch.isfinite(out.aux_loss)
    assert out.expert_load.shape == (4, 7) and out.layer_aux_loss.shape == (4,)
    # each token goes to exactly top_k experts
    assert torch.allclose(out.expert_load.sum(dim=1), torch.full((4,), 2.0))
    (out.logits.mean() + sum(s.mean() for s in out.side_logits) + out.aux_loss).backward()
    assert_gradients_reach_every_parameter(model, out.expert_load)


def assert_gradients_reach_every_parameter(model, expert_load):
    """Every trainable parameter has a finite, non-zero gradient, except experts nothing picked.

    An expert no token was routed to has a zero gate everywhere, so its gradient is exactly
    zero; every other parameter (router, norm, attention, experts, decoder, backbone) must
    receive signal.
    """
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n, g in grads.items() if g is None]
    assert missing == [], f"parameters without a gradient: {missing}"
    assert all(torch.isfinite(g).all() for g in grads.values())
    layers = list(model.moe)  # expert_load rows follow the MoE layers' order
    picked = {(layers[i], e) for i, e in (expert_load > 0).nonzero().tolist()}
    wrong = []
    for name, grad in grads.items():
        parts = name.split(".")
        expected = True
        if parts[0] == "moe" and parts[2] == "experts":
            expected = (parts[1], int(parts[3])) in picked
        if bool(grad.abs().sum() > 0) != expected:
            wrong.append(f"{name} ({'no' if expected else 'unexpected'} gradient)")
    assert wrong == [], wrong


@pytest.mark.parametrize("routing", ["token", "image"])
def test_every_expert_gets_gradient_when_routed(routing):
    # Top-2 of 3 experts over a batch of 8: every expert is picked somewhere, so every parameter
    # (attention expert included) must get a non-zero gradient, per token and per image.
    torch.manual_seed(0)
    model = build_model(backbone="edgenext_xx_small", dim=32, num_experts=3, top_k=2, moe_levels=(2, 3),
                        experts=("attention", "texture", "edge"), routing=routing).train()
    _leave_zero_init(model)
    out = model(torch.randn(8, 3, 64, 64))
    assert (out.expert_load > 0).all(), out.expert_load
    (out.logits.mean() + sum(s.mean() for s in out.side_logits) + out.aux_loss).backward()
    assert_gradients_reach_every_parameter(model, out.expert_load)


def test_new_model_equals_its_decoder_without_experts():
    # Zero-initialised experts: a new CamoXpert computes exactly what its MoE-free twin does.
    torch.manual_seed(0)
    full = build_model(backbone="edgenext_xx_small", dim=32).eval()
    plain = build_model(backbone="edgenext_xx_small", dim=32, num_experts=0).eval()
    plain.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("moe.")})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(full(x), plain(x), atol=1e-6)


def test_reference_fpn_has_no_moe_and_plain_decoder():
    model = build_model(backbone="edgenext_xx_small", dim=32, num_experts=0, decoder="fpn", deep_supervision=False)
    assert len(model.moe) == 0 and not any(True for _ in model.decoder.fuse.parameters())
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert out.side_logits == [] and out.expert_load.shape == (0, 0) and float(out.aux_loss) == 0.0
    with pytest.raises(ValueError) as info:
        build_model(decoder="unet")
    assert all(word in str(info.value) for word in ("'unet'", "refine", "fpn"))  # the bad name, the valid ones


def test_contract_call_signature():
    model = build_model(backbone="edgenext_xx_small", num_experts=7, top_k=2, use_flash_attn=True).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 64)).shape == (1, 1, 96, 64)
    assert count_parameters(model) > count_parameters(model.backbone) > 0


def test_no_deep_supervision_returns_no_sides():
    model = build_model(backbone="edgenext_xx_small", dim=32, deep_supervision=False).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.side_logits == []
    (out.logits.mean() + out.aux_loss).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []  # nothing for DDP to wait on


def test_input_not_divisible_by_32_says_the_fix():
    model = build_model(backbone="edgenext_xx_small", dim=32).eval()
    with pytest.raises(ValueError, match=r"Consider resizing or padding to \(64, 96\)"):
        model(torch.randn(1, 3, 50, 70))


def test_config_roundtrip_and_unknown_keys():
    cfg = CamoXpertConfig(backbone="edgenext_xx_small", num_experts=5, top_k=1, moe_levels=(2, 3))
    again = CamoXpertConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ValueError, match="Valid keys"):
        CamoXpertConfig.from_dict({"backbone": "edgenext_small", "num_expert": 7})
    with pytest.raises(ValueError, match="top_k"):
        CamoXpertConfig(top_k=9)
    with pytest.raises(ValueError, match="Valid backbones"):
        build_model(backbone="resnet50")


def test_subset_of_levels_and_experts():
    model = build_model(backbone="edgenext_xx_small", dim=32, num_experts=3, top_k=1, moe_levels=(1, 3)).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.expert_load.shape == (2, 3)


@pytest.mark.parametrize("training", [True, False])
def test_whole_model_traces_as_one_graph(training):
    torch._dynamo.reset()
    model = build_model(backbone="edgenext_xx_small", dim=32).train(training)
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 64, 64))
    assert explanation.graph_break_count == 0, [str(r.reason) for r in explanation.break_reasons]
    assert explanation.graph_count == 1
