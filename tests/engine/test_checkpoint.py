"""Checkpoint files: atomic write, weights-only load, refusal of pickled code, rebuild."""
import os
import struct
import zipfile

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


def _flip_byte_in_record(path, prefix="archive/data/"):
    """Flip one byte in the middle of the largest tensor record; returns the record's name."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if i.filename.startswith(prefix)), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    # Local header: 30 fixed bytes, then the name and the extra field (torch's alignment padding).
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return info.filename


def test_damaged_record_is_refused_naming_file_and_record(tmp_path, tiny_model):
    state = {"model_config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}
    path = save_checkpoint(state, tmp_path / "last.pt")
    assert load_checkpoint(path)["model"].keys() == state["model"].keys()  # intact: loads
    record = _flip_byte_in_record(path)
    torch.load(path, weights_only=True)  # torch alone loads the changed weights without complaint
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and record in message
    assert "damaged" in message and "copy the file again" in message and "earlier one is intact" in message


@pytest.mark.skipif(not hasattr(torch.serialization, "set_crc32_options"), reason="torch always writes CRCs")
def test_checkpoint_written_without_crcs_still_loads(tmp_path, tiny_model):
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        path = save_checkpoint({"model_config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}, tmp_path / "c.pt")
    finally:
        torch.serialization.set_crc32_options(before)
    with zipfile.ZipFile(path) as zf:
        assert all(i.CRC == 0 for i in zf.infolist())  # what the check relies on to skip them
    assert load_checkpoint(path)["model"].keys() == tiny_model.state_dict().keys()


def test_legacy_pickle_checkpoint_skips_the_crc_check(tmp_path, tiny_model):
    path = tmp_path / "old.pt"
    state = {"model_config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    assert load_checkpoint(path)["model"].keys() == state["model"].keys()


@pytest.mark.parametrize("weights, expected", [("ema", True), ("model", False), (None, False)])
def test_best_pt_reports_the_weights_it_holds(tmp_path, weights, expected):
    # best.pt keeps its validated EMA weights under "model" (no separate "ema" entry) and says
    # which they are in "weights"; evaluate, predict and export print that.
    from _inference_fixtures import make_tiny_checkpoint
    from engine.inference.predictor import load_inference_model

    path = make_tiny_checkpoint(tmp_path / "best.pt")
    ckpt = torch.load(path, weights_only=True)
    if weights is not None:
        ckpt["weights"] = weights
    torch.save(ckpt, path)
    assert load_inference_model(path, torch.device("cpu")).used_ema is expected
