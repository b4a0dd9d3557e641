"""CamoXpert assembly: shapes for every backbone, outputs, config, input checks."""
import pytest
import torch

from models import SUPPORTED_BACKBONES, CamoXpertConfig, CamoXpertOutput, build_model, count_parameters


@pytest.mark.parametrize("backbone", SUPPORTED_BACKBONES)
def test_shapes_every_backbone_non_square(backbone):
    torch.manual_seed(0)
    model = build_model(backbone=backbone, num_experts=7, top_k=2, use_flash_attn=True, dim=32, moe_levels=(0, 1, 2, 3))
    x = torch.randn(2, 3, 64, 96)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 1, 64, 96) and torch.isfinite(logits).all()
    model.train()
    out = model(x)
    assert isinstance(out, CamoXpertOutput)
    assert out.logits.shape == (2, 1, 64, 96)
    assert len(out.side_logits) == 4 and all(s.shape == (2, 1, 64, 96) for s in out.side_logits)
    assert out.aux_loss.ndim == 0 and torch.isfinite(out.aux_loss)
    assert out.expert_load.shape == (4, 7)
    # each image goes to exactly top_k experts
    assert torch.allclose(out.expert_load.sum(dim=1), torch.full((4,), 2.0))
    (out.logits.mean() + sum(s.mean() for s in out.side_logits) + out.aux_loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


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
