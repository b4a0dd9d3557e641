"""Checkpoint files: atomic write, weights-only load, refusal of pickled code, rebuild."""
import os

import pytest
import torch

from engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    strip_state_dict_prefixes,
)
from models import build_model


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return build_model(backbone="edgenext_xx_small", dim=32).eval()


def test_roundtrip_rebuilds_the_same_model(tmp_path, tiny_model):
    path = save_checkpoint({"model_config": tiny_model.config.to_dict(), "model": tiny_model.state_dict(), "ema": None}, tmp_path / "last.pt")
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary left behind
    rebuilt = model_from_checkpoint(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(tiny_model(x), rebuilt(x))


def test_ema_weights_preferred_and_prefixes_stripped(tmp_path, tiny_model):
    ema = {f"_orig_mod.{k}": torch.zeros_like(v) if v.is_floating_point() else v for k, v in tiny_model.state_dict().items()}
    save_checkpoint({"model_config": tiny_model.config.to_dict(), "model": tiny_model.state_dict(), "ema": ema}, tmp_path / "c.pt")
    rebuilt = model_from_checkpoint(tmp_path / "c.pt")
    assert all(float(p.detach().abs().sum()) == 0 for p in rebuilt.parameters())
    assert strip_state_dict_prefixes({"module._orig_mod.a.b": 1}) == {"a.b": 1}


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + os.environ.get("PWN_MARK", "/tmp/camoxpert-pwned"),))


def test_pickled_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("PWN_MARK", str(mark))
    path = tmp_path / "evil.pt"
    torch.save({"model_config": {}, "model": _Payload()}, path)
    with pytest.raises(CheckpointError, match="Refused"):
        load_checkpoint(path)
    assert not mark.exists()


def test_missing_truncated_and_foreign_files(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    good = save_checkpoint({"model_config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}, tmp_path / "g.pt")
    data = good.read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "t.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="not a CamoXpert checkpoint"):
        load_checkpoint(tmp_path / "f.pt")
