"""Run configuration: defaults, precedence, --set parsing, unknown keys, validation."""
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from engine.config import (
    ConfigError,
    load_default_config,
    parse_set_overrides,
    resolve_config,
    save_config,
)
from datasets.transforms import DEFAULT_TRAIN_AUG
from models import CamoXpertConfig
from _train_helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def _plain(value):
    """Tuples as lists, recursively: YAML has no tuples."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def test_model_section_equals_camoxpert_config_defaults():
    model = load_default_config()["model"]
    assert set(model) == {f.name for f in dataclasses.fields(CamoXpertConfig)}
    # Value for value: a model built from Python without a config is the model `train` builds.
    assert _plain(CamoXpertConfig().to_dict()) == _plain(model)
    assert CamoXpertConfig.from_dict(model) == CamoXpertConfig()


def test_augment_section_equals_dataset_defaults():
    assert _plain(load_default_config()["data"]["augment"]) == _plain(DEFAULT_TRAIN_AUG)


def _sources(*packages):
    return "\n".join(p.read_text() for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _leaves(section, prefix=""):
    for key, value in section.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_config_key_is_read():
    # The model section is CamoXpertConfig and data.augment is DEFAULT_TRAIN_AUG (tests above);
    # every other key must be read by name (an attribute of the typed settings, or a dict key)
    # somewhere in engine/ or cli/ outside the settings' own definitions.
    code = "\n".join(p.read_text() for pkg in ("engine", "cli") for p in (ROOT / pkg).rglob("*.py")
                     if "settings" not in p.parts)
    config = load_default_config()
    unread = []
    for section in ("data", "train", "loss", "eval"):
        for dotted in _leaves(config[section]):
            if dotted.startswith("augment."):
                continue
            key = dotted.rsplit(".", 1)[-1]
            if not re.search(rf"(\.{re.escape(key)}\b|[\"']{re.escape(key)}[\"'])", code):
                unread.append(f"{section}.{dotted}")
    assert unread == [], f"config keys nothing reads (wire or remove them): {unread}"


def test_precedence_file_then_flags_then_set(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"train": {"lr": 0.01, "epochs": 3}, "model": {"top_k": 1}}))
    cfg = resolve_config(user, {"train.lr": 0.02, "train.epochs": None}, ["train.lr=0.03", "model.use_flash_attn=false"])
    assert cfg["train"]["lr"] == 0.03  # --set beats the flag, which beats the file
    assert cfg["train"]["epochs"] == 3  # a flag left out (None) does not override the file
    assert cfg["model"]["top_k"] == 1
    assert cfg["model"]["use_flash_attn"] is False
    # untouched keys keep their defaults
    assert cfg["data"]["img_size"] == load_default_config()["data"]["img_size"]


def test_set_values_are_parsed_as_yaml():
    nested = parse_set_overrides(["a.b=1", "a.c=false", "d=[1, 2]", "e=null", "f=text"])
    assert nested == {"a": {"b": 1, "c": False}, "d": [1, 2], "e": None, "f": "text"}
    # PyYAML reads 1e-3 as a string; a float key still accepts it
    assert resolve_config(set_items=["train.lr=1e-3"])["train"]["lr"] == pytest.approx(1e-3)
    # an int given to a float key becomes a float
    assert isinstance(resolve_config(set_items=["train.lr=1"])["train"]["lr"], float)


@pytest.mark.parametrize(
    "items, expected",
    [
        (["train.lrr=0.1"], ["Unknown config key 'train.lrr'", "lr", "weight_decay"]),
        (["bogus.x=1"], ["Unknown config key 'bogus'", "model", "train"]),
        (["data.augment.flip=1"], ["'data.augment.flip'", "hflip_p"]),
    ],
)
def test_unknown_keys_list_valid_keys(items, expected):
    with pytest.raises(ConfigError) as info:
        resolve_config(set_items=items)
    for text in expected:
        assert text in str(info.value)


def test_unknown_key_in_config_file(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match="train.epocs.*epochs"):
        resolve_config(user)


def test_type_and_value_errors():
    with pytest.raises(ConfigError, match=r"train\.epochs\b.*\binteger"):
        resolve_config(set_items=["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"model\.use_flash_attn\b.*\bboolean"):
        resolve_config(set_items=["model.use_flash_attn=3"])
    with pytest.raises(ConfigError, match=r"multiple of 32.*\b96\b.*\b128\b"):
        resolve_config(flags={"data.img_size": 100})
    with pytest.raises(ConfigError, match="stage1_epochs"):
        resolve_config(flags={"train.epochs": 2, "train.stage1_epochs": 3})
    with pytest.raises(ConfigError, match="top_k"):
        resolve_config(flags={"model.num_experts": 2, "model.top_k": 3})
    with pytest.raises(ConfigError, match=r"model\.backbone\b.*edgenext_xx_small"):
        resolve_config(flags={"model.backbone": "resnet50"})
    with pytest.raises(ConfigError, match="section.key=value"):
        resolve_config(set_items=["train.lr"])


def test_save_config_round_trip(tmp_path):
    cfg = resolve_config(set_items=["train.epochs=5"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = resolve_config(path)
    assert again == cfg


def test_cli_reports_config_errors_without_traceback(tmp_path):
    result = run_cli(["train", "--checkpoint-dir", str(tmp_path), "--set", "train.nope=1"])
    assert result.exit_code == 2
    assert "'train.nope'" in result.output  # the key refused
    assert "Traceback" not in result.output
    assert not (tmp_path / "last.pt").exists()

    result = run_cli(["train", "--checkpoint-dir", str(tmp_path), "--img-size", "100"])
    assert result.exit_code == 2 and "multiple of 32" in result.output


def test_cli_help_shows_yaml_defaults():
    result = run_cli(["train", "--help"])
    assert result.exit_code == 0
    default = load_default_config()
    assert f"[{default['train']['epochs']}]" in result.output
    for flag in ("--dataset-path", "--resume", "--stage1-epochs", "--use-flash-attn / --no-flash-attn",
                 "--skip-bad-samples", "--set", "--config", "--pretrained-weights", "--accumulation-steps"):
        assert flag in result.output
