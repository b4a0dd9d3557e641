"""ONNX export: onnxruntime on the exported file agrees with PyTorch; SDPA and math exports agree."""
import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from _inference_fixtures import make_tiny_checkpoint, write_scene
from engine.checkpoint import model_from_checkpoint
from engine.files import DiskFullError, write_error
from engine.inference.onnx_export import NormalizedModel, check_onnx, compare_attention_exports, export_onnx, sample_inputs
from models import build_model
from models.experts import adaptive_avg_pool
from train_ultimate import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", img_size=64, seed=5)


def test_export_cli_dynamo_round_trip(ckpt, tmp_path):
    # The default exporter (torch.onnx.export(dynamo=True)), dynamic batch/height/width, checked by the command.
    photos = tmp_path / "photos"
    write_scene(photos / "a.png", None, (70, 50), 0)
    out, report = tmp_path / "m.onnx", tmp_path / "export.json"
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "--output", str(out), "--exporter", "dynamo",
                                  "--sample-images", str(photos), "--json", str(report)])
    assert r.exit_code == 0, r.output
    assert "OK: within 1e-04" in r.output and "dynamo exporter" in r.output
    assert "trained at 64 px" in r.output  # the size to feed it, from the checkpoint's run config
    rep = json.loads(report.read_text())
    assert [c["shape"] for c in rep["checks"]] == [[1, 3, 64, 64], [2, 3, 128, 32]]
    assert all(c["max_abs_diff"] <= 1e-4 for c in rep["checks"])
    # A third shape and batch, fed here: the axes are really dynamic and the graph normalises itself.
    model = model_from_checkpoint(ckpt)
    x = sample_inputs(3, (96, 160), seed=1)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = NormalizedModel(model)(x).numpy()
    assert got.shape == (3, 1, 96, 160)
    assert np.abs(got - ref).max() <= 1e-4


def test_uint8_sigmoid_torchscript_export(ckpt, tmp_path):
    model = model_from_checkpoint(ckpt)
    result = export_onnx(model, tmp_path / "u8.onnx", example_size=(64, 64), input_type="uint8", sigmoid=True,
                         exporter="torchscript")
    assert result.exporter == "torchscript" and result.attention == ["auto"]
    x = sample_inputs(2, (64, 96), input_type="uint8", seed=2)
    assert x.dtype == torch.uint8
    (got,) = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = torch.sigmoid(model(((x.float() / 255) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                                  / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))).numpy()
    assert got.min() >= 0 and got.max() <= 1
    assert np.abs(got - ref).max() <= 1e-4


def test_sdpa_and_math_exports_agree(ckpt, tmp_path):
    model = model_from_checkpoint(ckpt)
    diffs = compare_attention_exports(model, tmp_path, size=(64, 64), exporter="torchscript")
    assert diffs["sdpa_vs_math"] <= 1e-4 and diffs["sdpa_vs_torch"] <= 1e-4 and diffs["math_vs_torch"] <= 1e-4
    assert {m.attn_backend for m in model.modules() if hasattr(m, "attn_backend")} == {"auto"}  # restored


def test_export_errors(ckpt, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(bad), "--output", str(tmp_path / "x.onnx")])
    assert r.exit_code != 0 and "bad.pt" in r.output
    with pytest.raises(ValueError, match="input_type"):
        export_onnx(model_from_checkpoint(ckpt), tmp_path / "y.onnx", input_type="float16")
    with pytest.raises(ValueError, match="opset=99"):
        export_onnx(model_from_checkpoint(ckpt), tmp_path / "y.onnx", opset=99)
    assert not list(tmp_path.glob("*.onnx*")) and not list(tmp_path.glob(".*"))


def _all_experts_model():
    # Every expert, with weights moved off their zero init so each one's path reaches the output.
    torch.manual_seed(0)
    model = build_model(backbone="edgenext_xx_small", dim=16).eval()
    with torch.no_grad():
        for p in model.moe.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_with_every_expert_is_dynamic(exporter, tmp_path):
    # Traced at 64 px (a 2x2 map at stride 32: the size of the context expert's 2x2 bins), run at
    # sizes whose maps are 4x3, 3x5 and 10x14: pooling windows and resizes follow the input size.
    model = _all_experts_model()
    result = export_onnx(model, tmp_path / "all.onnx", example_size=(64, 64), exporter=exporter)
    assert result.exporter == exporter
    checks = check_onnx(model, result, shapes=((1, 64, 64), (2, 128, 96), (1, 96, 160), (1, 320, 448)))
    assert [c.shape[2:] for c in checks] == [(64, 64), (128, 96), (96, 160), (320, 448)]
    assert result.max_abs_diff <= 1e-4, [c.max_abs_diff for c in checks]


@pytest.mark.parametrize("size, bins", [((12, 12), 4), ((5, 7), 2), ((5, 7), 4), ((3, 2), 4), ((1, 1), 2)])
def test_export_form_of_adaptive_pooling_matches_the_kernel(size, bins, monkeypatch):
    x = torch.randn(2, 3, *size)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, bins)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)  # the form exports take
    got = adaptive_avg_pool(x, bins)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)


def test_export_that_fails_its_check_leaves_no_file(ckpt, tmp_path):
    out, report = tmp_path / "m.onnx", tmp_path / "export.json"
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "--output", str(out), "--exporter", "torchscript",
                                  "--tolerance", "1e-12", "--json", str(report)])
    assert r.exit_code == 1 and f"no file was written to {out}" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json"]  # no temporary file either
    rep = json.loads(report.read_text())
    assert rep["passed"] is False and rep["checked"] is True and rep["tolerance"] == 1e-12


def _export(ckpt, out, *args):
    return CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "--output", str(out),
                                     "--exporter", "torchscript", *args])


def test_failed_reexport_keeps_the_existing_file(ckpt, tmp_path, monkeypatch):
    # The export is written and checked in a hidden temporary file that replaces --output only
    # once the check passed: a failed, crashed or interrupted re-export keeps the good file.
    out = tmp_path / "good.onnx"
    assert _export(ckpt, out).exit_code == 0
    good = out.read_bytes()

    def check_crashes(*args, **kwargs):
        raise RuntimeError("onnxruntime refused the graph")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def export_interrupted_mid_write(module, example, path, opset):
        path.write_bytes(b"partial")
        raise KeyboardInterrupt

    r = _export(ckpt, out, "--tolerance", "1e-12")
    assert r.exit_code == 1 and f"the existing {out} was kept" in r.output, r.output
    assert out.read_bytes() == good
    monkeypatch.setattr("engine.inference.onnx_export.check_onnx", check_crashes)
    r = _export(ckpt, out)
    assert r.exit_code == 1 and "refused the graph" in r.output and f"the existing {out} was kept" in r.output
    for target, fake in (("check_onnx", interrupted), ("_export_torchscript", export_interrupted_mid_write)):
        monkeypatch.setattr(f"engine.inference.onnx_export.{target}", fake)
        assert _export(ckpt, out).exit_code == 1  # click reports KeyboardInterrupt as "Aborted!"
    assert out.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["good.onnx"]  # no .good.onnx.*.onnx.tmp left


def test_no_check_report_does_not_claim_a_pass(ckpt, tmp_path):
    out, report = tmp_path / "m.onnx", tmp_path / "export.json"
    r = _export(ckpt, out, "--no-check", "--json", str(report))
    assert r.exit_code == 0 and "Check skipped (--no-check)" in r.output and "OK" not in r.output, r.output
    assert out.exists()
    rep = json.loads(report.read_text())
    assert rep["checked"] is False and rep["passed"] is None and rep["checks"] == []


@pytest.mark.parametrize("option, value, words", [
    ("--tolerance", "nan", ["not a finite number"]),
    ("--tolerance", "inf", ["not a finite number"]),  # passes every check and is not valid JSON
    ("--tolerance", "-1e-4", ["not in the range x>=0"]),
    ("--opset", "99", ["opsets 17 to {high}"]),
])
def test_bad_tolerance_or_opset_is_a_usage_error(ckpt, tmp_path, option, value, words):
    from torch.onnx._constants import ONNX_MAX_OPSET  # the exporter's own limit, not a copy of it

    out = tmp_path / "m.onnx"
    r = _export(ckpt, out, option, value)
    assert r.exit_code == 2, r.output
    assert option in r.output and all(w.format(high=ONNX_MAX_OPSET) in r.output for w in words), r.output
    assert not list(tmp_path.iterdir())  # refused before any work


def _fill_disk(monkeypatch, where, code, out):
    """Make one write of an export fail with OSError(code), as a full disk (ENOSPC), a full quota
    (EDQUOT) or a failing disk (EIO) would: ``onnx`` = writing the export's hidden temporary file
    (both exporters, whatever the file's name), ``commit`` = renaming the checked file over ``out``,
    ``report`` = the --json report."""
    import engine.files

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if where == "onnx":
        real_write_bytes, real_export = Path.write_bytes, torch.onnx.export

        def write_bytes(self, data):  # the TorchScript exporter's write
            if not self.name.endswith(".onnx.tmp"):
                return real_write_bytes(self, data)
            real_write_bytes(self, data[:64])  # a partial file, then the disk is full
            fail()

        def save(path, **kwargs):  # the dynamo exporter's ONNXProgram.save
            Path(path).write_bytes(b"partial")
            fail()

        def export(*args, dynamo=True, **kwargs):  # a stub program: the write is under test, not the 10 s export
            return SimpleNamespace(save=save) if dynamo else real_export(*args, dynamo=False, **kwargs)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
        monkeypatch.setattr(torch.onnx, "export", export)
    elif where == "commit":
        real_replace = os.replace
        monkeypatch.setattr(os, "replace", lambda src, dst: fail() if Path(dst) == out else real_replace(src, dst))
    else:  # the report, as engine.files.atomic_write_text reports its OSError (tested in test_cli_errors.py)
        def atomic_write_text(path, text, encoding="utf-8"):
            raise write_error(path, OSError(code, os.strerror(code)))

        monkeypatch.setattr(engine.files, "atomic_write_text", atomic_write_text)


@pytest.mark.parametrize("where, exporter, code", [
    ("onnx", "torchscript", errno.ENOSPC),
    ("onnx", "auto", errno.EDQUOT),  # the dynamo exporter's save: no fall back to TorchScript on the same disk
    ("commit", "torchscript", errno.EIO),
    ("report", "torchscript", errno.ENOSPC),
])
def test_failed_write_is_a_one_line_error_that_keeps_the_existing_file(ckpt, tmp_path, monkeypatch, where, exporter,
                                                                        code):
    out, report = tmp_path / "good.onnx", tmp_path / "export.json"
    out.write_bytes(b"an earlier good export")
    _fill_disk(monkeypatch, where, code, out)
    # --json only where the report is what fails: it is written before the rename, so that a failed
    # check is reported too, and a failed rename leaves it.
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "--output", str(out), "--exporter", exporter,
                                  *(["--json", str(report)] if where == "report" else [])])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output  # a message, not a traceback
    error = r.output.strip().splitlines()[-1]
    named, kept = (report, f"the existing {out} was kept") if where == "report" else \
        (out, "the previous good.onnx, if there was one, is intact")  # --output, never the temporary file
    assert error.startswith(f"Error: Could not write {named}: ") and os.strerror(code) in error, error
    assert kept in error, error
    # The disk is not blamed on an exporter, nor another exporter tried on the same disk.
    assert "exporter" not in error and "dynamo exporter failed" not in r.output, r.output
    assert out.read_bytes() == b"an earlier good export"
    assert [p.name for p in tmp_path.iterdir()] == ["good.onnx"]  # no temporary file left


def test_export_onnx_reports_a_full_disk_naming_its_file(ckpt, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    _fill_disk(monkeypatch, "onnx", errno.ENOSPC, out)
    with pytest.raises(DiskFullError) as info:
        export_onnx(model_from_checkpoint(ckpt), out, example_size=(64, 64), exporter="torchscript")
    assert str(out) in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("exporter", ["dynamo", "auto"])
def test_opset_below_the_dynamo_exporters_lowest_is_refused(ckpt, tmp_path, exporter):
    # Asked for less, torch.onnx.export(dynamo=True) logs a failed version conversion and writes its
    # own lowest opset; auto does not fall back on that. Only the TorchScript exporter writes it.
    from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET  # torch's own floor, not a copy of it

    low = int(TORCHLIB_OPSET)
    if low <= 17:
        pytest.skip(f"this torch's dynamo exporter writes opset {low}, as low as the command accepts")
    out, report = tmp_path / "m.onnx", tmp_path / "export.json"
    # --opset before --exporter: checked whatever the order of the options.
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "--output", str(out), "--opset", str(low - 1),
                                  "--exporter", exporter])
    assert r.exit_code == 2, r.output
    assert "'--opset'" in r.output and f"writes opset {low} or newer" in r.output, r.output
    assert "--exporter torchscript" in r.output and f"--opset {low}" in r.output, r.output  # the two ways out
    assert not list(tmp_path.iterdir())  # refused before any work
    with pytest.raises(ValueError, match=rf"dynamo.*\b{low}\b"):  # the exporter and its lowest opset
        export_onnx(model_from_checkpoint(ckpt), out, example_size=(64, 64), exporter=exporter, opset=low - 1)
    assert not list(tmp_path.iterdir())
    r = _export(ckpt, out, "--opset", str(low - 1), "--no-check", "--json", str(report))
    assert r.exit_code == 0, r.output
    assert json.loads(report.read_text())["opset"] == low - 1
