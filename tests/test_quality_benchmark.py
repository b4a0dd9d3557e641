"""Learning-quality benchmark: every variant trains, is scored, and lands in the JSON."""
import json

import pytest
import torch
from click.testing import CliRunner

from engine.tools.quality import VARIANTS, QualitySettings, train_bare, variant_config
from engine.tools.quality_data import QualityData
from engine.training.losses import CODLoss
from models import build_model


def _tiny_data(n=6, m=3, size=64):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n + m, 3, size, size), generator=g, dtype=torch.uint8)
    masks = (torch.rand(n + m, 1, size, size, generator=g) > 0.7).to(torch.uint8) * 255
    gts = [masks[n + i, 0].numpy() for i in range(m)]
    return QualityData("tiny", images[:n], masks[:n], images[n:], gts)


def test_cli_writes_every_variant(tmp_path, monkeypatch):
    from train_ultimate import main

    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "q.json"
    args = ["quality-benchmark", "--seconds", "0", "--steps", "2", "--seeds", "0", "--img-size", "64",
            "--batch-size", "2", "--n-train", "6", "--n-test", "3", "--synthetic-size", "64", "--warmup-steps", "1",
            "--variants", "camoxpert,fpn,no-attention", "--set", "model.dim=16", "--device", "cpu", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [r["variant"] for r in report["runs"]] == ["camoxpert", "fpn", "no-attention"]
    for run in report["runs"]:
        assert run["steps"] == 2 and run["equal_steps_at"] == 2
        assert set(run["equal_time"]) == {"Sm", "Em_mean", "wFm", "MAE"}
        assert all(0.0 <= v <= 1.0 for v in run["equal_time"].values())
    by_name = {r["variant"]: r for r in report["runs"]}
    assert by_name["fpn"]["moe_params_m"] == 0 and by_name["fpn"]["routing"] == {}
    assert set(by_name["camoxpert"]["routing"]) == {"stride32"}
    assert "attention" not in by_name["no-attention"]["routing"]["stride32"]
    shares = by_name["camoxpert"]["routing"]["stride32"]
    assert len(shares) == 7 and sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert "camoxpert" in result.output and "fpn" in result.output
    # Every variant but the reference is compared with it, seed by seed.
    assert report["reference"] == "fpn" and set(report["ahead_of_reference"]) == {"camoxpert", "no-attention"}
    assert report["ahead_of_reference"]["camoxpert"]["equal_time"]["MAE"][1] == 1
    assert "seeds ahead of fpn" in result.output


def test_reference_variant_has_no_moe_parameters():
    model = build_model(variant_config({"backbone": "edgenext_xx_small", "dim": 16}, "fpn"))
    assert len(model.moe) == 0
    assert not any(".experts." in n or ".router." in n for n, _ in model.named_parameters())


def test_fpn_moe_variant_puts_the_experts_on_the_plain_fpn_decoder():
    model = build_model(variant_config({"backbone": "edgenext_xx_small", "dim": 16}, "fpn-moe"))
    assert len(model.moe) == 1 and model.config.decoder == "fpn"
    assert not any(n.startswith("decoder.fuse.") for n, _ in model.named_parameters())


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(ValueError, match="Valid variants: " + ", ".join(VARIANTS)):
        variant_config({}, "nope")


def test_snapshot_equals_weights_at_that_step():
    data = _tiny_data()
    settings = QualitySettings(seconds=0, max_steps=3, batch_size=2, warmup_steps=1, untimed_warmup_steps=0)
    cfg = variant_config({"backbone": "edgenext_xx_small", "dim": 16}, "camoxpert")
    torch.manual_seed(0)
    a = build_model(cfg)
    rec3 = train_bare(a, data, settings, CODLoss(), seed=1, snapshot_at=2)
    torch.manual_seed(0)
    b = build_model(cfg)
    settings.max_steps = 2
    rec2 = train_bare(b, data, settings, CODLoss(), seed=1)
    assert rec3.steps == 3 and rec2.steps == 2 and rec3.snapshot_step == 2
    for k, v in b.state_dict().items():
        assert torch.equal(rec3.snapshot[k], v), k
