"""Learning-quality benchmark: every variant trains, is scored, and lands in the JSON."""
import json

import pytest
import torch
from click.testing import CliRunner

from benchmarks import quality, quality_data
from benchmarks.quality import (VARIANTS, QualityPlan, QualitySettings, run_quality_benchmark, train_preloaded,
                                variant_config)
from benchmarks.quality_data import QualityData
from engine.training.losses import CODLoss
from models import build_model


def _tiny_data(n=6, m=3, size=64):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n + m, 3, size, size), generator=g, dtype=torch.uint8)
    masks = (torch.rand(n + m, 1, size, size, generator=g) > 0.7).to(torch.uint8) * 255
    gts = [masks[n + i, 0].numpy() for i in range(m)]
    return QualityData("tiny", images[:n], masks[:n], images[n:], gts)


def test_cli_writes_every_variant(tmp_path, monkeypatch):
    from benchmarks.lab import main

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
    rec3 = train_preloaded(a, data, settings, CODLoss(), seed=1, snapshot_at=2)
    torch.manual_seed(0)
    b = build_model(cfg)
    settings.max_steps = 2
    rec2 = train_preloaded(b, data, settings, CODLoss(), seed=1)
    assert rec3.steps == 3 and rec2.steps == 2 and rec3.snapshot_step == 2
    for k, v in b.state_dict().items():
        assert torch.equal(rec3.snapshot[k], v), k


def _stub_work(monkeypatch):
    """Replace data loading and training by recorders: what the command would have run."""
    calls = []
    monkeypatch.setattr(quality_data, "load_quality_data", lambda *a, **k: calls.append("load") or _tiny_data())
    monkeypatch.setattr(quality, "run_quality_benchmark",
                        lambda data, plan, settings, **kw: calls.append((plan.variants, plan.seeds, plan.reference)))
    monkeypatch.setattr(quality, "format_quality_table", lambda result: "table")
    return calls


_QUICK = ["quality-benchmark", "--device", "cpu", "--img-size", "64", "--seconds", "0", "--steps", "1", "--seeds", "0",
          "--variants", "fpn", "--n-train", "2", "--n-test", "1"]


@pytest.mark.parametrize("args, words", [
    (["--device", "nonsense"], ["--device", "cuda:N"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--lr", "-1"], ["--lr"]),
    (["--lr", "0"], ["--lr"]),
    (["--lr", "nan"], ["--lr", "not a finite number"]),  # click's range check lets NaN through
    (["--seconds", "inf"], ["--seconds", "not a finite number"]),
    (["--seconds", "nan"], ["--seconds", "not a finite number"]),
    (["--n-test", "0"], ["--n-test"]),
    (["--n-train", "0"], ["--n-train"]),
    (["--max-test", "0"], ["--max-test"]),
    (["--max-train", "0"], ["--max-train"]),
    (["--img-size", "50"], ["--img-size", "32 or 64"]),
    (["--seconds", "-1"], ["--seconds"]),
    (["--seconds", "1", "--steps", "-1"], ["--steps"]),
    (["--equal-steps", "0"], ["--equal-steps"]),
    (["--warmup-steps", "-1"], ["--warmup-steps"]),
    (["--synthetic-size", "8"], ["--synthetic-size"]),
    (["--seeds", ""], ["--seeds", "at least one seed"]),
    (["--seeds", "0,1,0"], ["--seeds", "0 given twice"]),
    (["--seeds", "0,x"], ["--seeds", "comma-separated integers"]),
    (["--reference", "nonsense"], ["--reference", "'nonsense'", "use one of fpn"]),
    (["--variants", "camoxpert,no-moe", "--reference", "fpn"], ["--reference", "camoxpert, no-moe"]),
])
def test_usage_errors_name_the_option_before_any_work(tmp_path, monkeypatch, args, words):
    from benchmarks.lab import main

    calls = _stub_work(monkeypatch)
    out = tmp_path / "q.json"
    result = CliRunner().invoke(main, [*_QUICK, "--json", str(out), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)
    assert calls == [] and not out.exists()  # refused before any data was made or any model trained


def test_seeds_and_default_reference_reach_the_benchmark(monkeypatch):
    from benchmarks.lab import main

    calls = _stub_work(monkeypatch)
    # The default reference (fpn) is compared only where it runs: no fpn, no comparison, no error.
    result = CliRunner().invoke(main, [*_QUICK, "--variants", "no-moe", "--seeds", "2, 0,-1"])
    assert result.exit_code == 0, result.output
    assert calls == ["load", (["no-moe"], (2, 0, -1), "fpn")]
    calls.clear()
    result = CliRunner().invoke(main, [*_QUICK, "--variants", "camoxpert,no-moe", "--reference", "no-moe"])
    assert result.exit_code == 0, result.output
    assert calls == ["load", (["camoxpert", "no-moe"], (0,), "no-moe")]
    # A list of the same seed twice would train one run twice and report a spread over "two" seeds.
    assert CliRunner().invoke(main, [*_QUICK, "--seeds", "3,3"]).exit_code == 2


def test_variants_help_lists_every_variant():
    from benchmarks.quality_cli import quality_benchmark

    help_text = next(p.help for p in quality_benchmark.params if p.name == "variants")
    assert all(name in help_text for name in VARIANTS), help_text


class _FakeBar:
    """Records what a tqdm bar was told."""

    bars = []

    def __init__(self, total, desc, **kwargs):
        self.total, self.desc, self.n, self.postfix, self.closed = total, desc, 0, "", False
        _FakeBar.bars.append(self)

    def update(self, n):
        self.n += n

    def set_postfix_str(self, s, refresh=True):
        self.postfix = s

    def close(self):
        self.closed = True


def test_progress_moves_only_at_the_clock_reads():
    data = _tiny_data()
    settings = QualitySettings(seconds=0, max_steps=5, batch_size=2, warmup_steps=1, untimed_warmup_steps=0,
                               check_every=2)
    model = build_model(variant_config({"backbone": "edgenext_xx_small", "dim": 16}, "fpn"))
    seen = []
    train_preloaded(model, data, settings, CODLoss(), seed=0, progress=lambda steps, seconds: seen.append(steps))
    assert seen == [2, 4, 5]  # every check_every steps (after the sync the loop does anyway), and the last


def test_each_run_shows_a_bar_of_its_budget(monkeypatch):
    _FakeBar.bars = []
    monkeypatch.setattr(quality, "tqdm", _FakeBar)
    # Without a time limit the bar counts steps.
    settings = QualitySettings(seconds=0, max_steps=3, batch_size=2, warmup_steps=1, untimed_warmup_steps=0)
    plan = QualityPlan({"backbone": "edgenext_xx_small", "dim": 16}, ["fpn"], [0])
    run_quality_benchmark(_tiny_data(), plan, settings, log=lambda line: None)
    (bar,) = _FakeBar.bars
    assert (bar.desc, bar.total, bar.n, bar.closed) == ("seed 0 fpn", 3, 3, True)
    # With one, it counts device seconds up to the budget, and says how many steps that took.
    with quality._run_progress(QualitySettings(seconds=60), "seed 1 camoxpert") as show:
        show(10, 12.5)
        show(50, 61.0)
    bar = _FakeBar.bars[-1]
    assert (bar.total, bar.n, bar.postfix, bar.closed) == (60, 60, "50 steps", True)
