"""Typed settings: generated files stay in step, flags come from fields, bad values stop before any write."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.settings import ConfigError, ConfigRequest, RunConfig, TrainSettings, field_info, leaf_fields
from engine.settings.render import DEFAULTS_FILE, DOCS_FILE, render_defaults, render_docs
from _train_helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_committed_default_yaml_is_generated_from_the_classes():
    assert DEFAULTS_FILE.read_text(encoding="utf-8") == render_defaults(), \
        "configs/default.yaml drifted: run python -m engine.settings --write"


def test_committed_configuration_doc_is_generated_from_the_classes():
    assert DOCS_FILE.read_text(encoding="utf-8") == render_docs(), \
        "docs/configuration.md drifted: run python -m engine.settings --write"


def test_configuration_doc_lists_every_key_with_its_help():
    doc = DOCS_FILE.read_text(encoding="utf-8")
    for key, info in leaf_fields():
        assert f"`{key}`" in doc and info.description in doc, key


def test_check_command_fails_on_a_drifted_file(tmp_path, monkeypatch):
    from engine.settings import __main__ as tool
    from engine.settings import render

    stale = tmp_path / "default.yaml"
    stale.write_text("model: {}\n")
    monkeypatch.setattr(tool, "DEFAULTS_FILE", stale)
    monkeypatch.setattr(tool, "DOCS_FILE", render.DOCS_FILE)
    assert tool.main(["--check"]) == 1
    assert tool.main(["--write"]) == 0 and tool.main(["--check"]) == 0
    assert stale.read_text() == render_defaults()


def test_every_field_has_a_one_line_description():
    for key, info in leaf_fields():
        assert info.description and "\n" not in info.description, key


@pytest.mark.parametrize("section, data, key", [
    (TrainSettings, {"epocs": 3}, "epocs"),
    (RunConfig, {"train": {"lrr": 0.1}}, "train.lrr"),
    (RunConfig, {"modle": {}}, "modle"),
])
def test_unknown_key_is_refused_naming_it_and_the_valid_ones(section, data, key):
    from engine.settings import validate_section

    with pytest.raises(ConfigError) as info:
        validate_section(section, data)
    message = str(info.value)
    assert f"'{key}'" in message
    valid = TrainSettings.model_fields if key != "modle" else RunConfig.model_fields
    assert all(name in message for name in valid)


def test_errors_name_the_field_the_bound_and_the_value():
    with pytest.raises(ConfigError) as info:
        ConfigRequest.read(set_items=["train.lr=-1"]).resolve()
    assert all(word in str(info.value) for word in ("train.lr", "> 0", "-1"))


def test_config_file_with_bytes_that_are_not_utf8(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("train:\n  device: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml"):
        ConfigRequest.read(bad)
    result = run_cli(["train", "--checkpoint-dir", str(tmp_path / "run"), "--config", str(bad)])
    assert result.exit_code == 2
    assert "latin1.yaml" in result.output and "UTF-8" in result.output
    assert "Traceback" not in result.output and "UnicodeDecodeError" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, field", [
    (["--time-budget", "abc"], "train.time_budget"),
    (["--time-budget", "0s"], "train.time_budget"),
    (["--time-budget", "-5m"], "train.time_budget"),
    (["--time-budget", "1e9h"], "train.time_budget"),
    (["--time-budget", "inf"], "train.time_budget"),
    (["--set", "train.lr=-1"], "train.lr"),
    (["--img-size", "100"], "data.img_size"),
    (["--img-size", "1000000"], "data.img_size"),
    (["--set", "data.synthetic.img_size=8"], "data.synthetic.img_size"),
    (["--num-workers", "-1"], "data.num_workers"),
])
def test_each_bound_is_refused_before_anything_is_written(tmp_path, args, field):
    out = tmp_path / "run"
    result = run_cli(["train", "--checkpoint-dir", str(out), *args])
    assert result.exit_code == 2, result.output
    assert field in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_time_budget_bound_is_thirty_days():
    assert ConfigRequest.read(flags={"train.time_budget": "720h"}).resolve().train.time_budget_seconds == 720 * 3600
    with pytest.raises(ConfigError, match="train.time_budget"):
        ConfigRequest.read(flags={"train.time_budget": "721h"}).resolve()


def _train_flags():
    from cli.config_options import ConfigOption
    from cli.train import train

    return [p for p in train.params if isinstance(p, ConfigOption)]


def test_train_flag_help_is_its_field_description():
    flags = _train_flags()
    assert len(flags) >= 20
    for flag in flags:
        assert flag.help == field_info(flag.config_key).description, flag.opts


def test_train_flags_keep_their_names():
    names = {opt for flag in _train_flags() for opt in flag.opts + flag.secondary_opts}
    for name in ("--dataset-path", "--checkpoint-dir", "--backbone", "--num-experts", "--top-k", "--batch-size",
                 "--accumulation-steps", "--img-size", "--epochs", "--stage1-epochs", "--lr", "--weight-decay",
                 "--deep-supervision", "--no-deep-supervision", "--use-ema", "--no-ema", "--compile", "--no-compile",
                 "--device", "--num-workers", "--seed", "--use-flash-attn", "--no-flash-attn", "--pretrained",
                 "--no-pretrained", "--pretrained-weights", "--skip-bad-samples", "--precision", "--time-budget"):
        assert name in names, name


def test_flags_left_out_do_not_override_and_given_ones_do(tmp_path):
    from cli.config_options import config_flags
    from cli.train import train

    ctx = train.make_context("train", ["--lr", "0.01", "--no-flash-attn", "--dataset-path", str(tmp_path)])
    given = config_flags(ctx)
    assert given["train.lr"] == 0.01 and given["model.use_flash_attn"] is False
    assert given["data.dataset_paths"] == [str(tmp_path)]
    assert given["train.epochs"] is None and given["model.pretrained"] is None


def test_no_hand_kept_flag_table_remains():
    sources = [p for pkg in ("cli", "engine", "tests", "scripts") for p in (ROOT / pkg).rglob("*.py")]
    hits = [str(p) for p in sources if p.name != "test_settings.py" and "FLAG_TO_" + "CONFIG" in p.read_text()]
    assert hits == []


def test_resumed_checkpoint_config_is_a_layer_under_the_command():
    stored = {"train": {"epochs": 5, "lr": 0.02, "no_longer_a_key": 1}, "model": {"top_k": 1}}
    settings = ConfigRequest.read(flags={"train.lr": 0.5}).resolve(stored=stored)
    assert settings.train.epochs == 5 and settings.model.top_k == 1  # from the checkpoint
    assert settings.train.lr == 0.5  # the command's flag wins


def test_model_section_is_camoxpert_config():
    from models import CamoXpertConfig

    model = ConfigRequest.read(set_items=["model.use_flash_attn=false", "model.dim=32"]).resolve().model
    built = model.to_camoxpert()
    assert isinstance(built, CamoXpertConfig) and built.use_flash_attn is False and built.dim == 32
    assert model.to_dict() == built.to_dict()


def test_settings_module_writes_and_checks_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "engine.settings", "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not re.search("Traceback", result.stderr)


def test_shipped_config_files_resolve():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        ConfigRequest.read(path).resolve()


def test_model_choice_names_match_the_registries():
    from models.decoder import DECODERS
    from models.experts import EXPERT_TYPES
    from models.names import DECODER_NAMES, EXPERT_NAMES

    assert tuple(EXPERT_TYPES) == EXPERT_NAMES and tuple(DECODERS) == DECODER_NAMES


def test_no_flash_attn_flag_reaches_every_attention_module(tmp_path):
    from cli.config_options import config_flags
    from cli.train import train
    from models import SDTAEncoder, build_model

    ctx = train.make_context("train", ["--no-flash-attn", "--set", "model.dim=16"])
    request = ConfigRequest.read(None, config_flags(ctx), ctx.params["set_items"])
    model = build_model(request.resolve().model.to_camoxpert())
    encoders = [m for m in model.modules() if isinstance(m, SDTAEncoder)]
    assert encoders and all(not m.use_flash_attn and m.attn_backend == "math" for m in encoders)
