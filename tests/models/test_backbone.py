"""Backbone: strides/channels, pretrained weights from local files, errors when missing."""
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch

from models import PretrainedWeightsError, build_backbone, build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_strides_and_channels():
    bb = build_backbone("edgenext_xx_small")
    feats = bb(torch.randn(1, 3, 64, 96))
    assert bb.strides == [4, 8, 16, 32]
    assert [f.shape[1] for f in feats] == bb.out_channels
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def _as_classifier_keys(state_dict):
    # timm's feature wrapper flattens `stem.0` / `stages.1` into `stem_0` / `stages_1`.
    return {k.replace("stem_", "stem.", 1).replace("stages_", "stages.", 1): v for k, v in state_dict.items()}


@pytest.fixture(scope="module")
def reference_weights():
    torch.manual_seed(123)
    return timm.create_model("edgenext_xx_small", pretrained=False).state_dict()


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "checkpoint-dict"])
def test_pretrained_weights_from_file(tmp_path, reference_weights, fmt):
    path = tmp_path / f"edgenext_xx_small.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference_weights.items()}, str(path))
    elif fmt == "pth":
        torch.save(reference_weights, path)
    else:
        torch.save({"state_dict": reference_weights, "epoch": 300}, path)
    bb = build_backbone("edgenext_xx_small", pretrained_weights=path)
    loaded = _as_classifier_keys(bb.model.state_dict())
    assert len(loaded) > 0.9 * len(reference_weights)
    for key, value in loaded.items():
        assert torch.equal(value, reference_weights[key]), key
    # and through the model config
    model = build_model(backbone="edgenext_xx_small", dim=32, pretrained_weights=str(path))
    key, value = next(iter(_as_classifier_keys(model.backbone.model.state_dict()).items()))
    assert torch.equal(value, reference_weights[key])


def test_missing_weight_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(PretrainedWeightsError, match="nope.safetensors"):
        build_backbone("edgenext_xx_small", pretrained_weights=missing)


def test_wrong_weight_file_is_an_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(PretrainedWeightsError, match="other.pth"):
        build_backbone("edgenext_xx_small", pretrained_weights=path)


def test_pretrained_not_in_cache_offline_says_where_it_looked(tmp_path):
    code = textwrap.dedent(
        """
        from models import build_backbone, PretrainedWeightsError
        try:
            build_backbone("edgenext_xx_small", pretrained=True)
        except PretrainedWeightsError as exc:
            print("ERROR:", exc)
        else:
            raise SystemExit("weights were asked for and none were found, yet no error was raised")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr + out.stdout
    assert str(tmp_path / "hf") in out.stdout
    assert "pretrained_weights=PATH" in out.stdout and "edgenext_xx_small" in out.stdout


@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 24, 24), (3, 12, 6)])
def test_device_positional_encoding_matches_timm(shape):
    from timm.models.edgenext import PositionalEncodingFourier

    from models.positional import DeviceFourierEncoding

    torch.manual_seed(0)
    reference = PositionalEncodingFourier(hidden_dim=32, dim=48)
    ours = PositionalEncodingFourier(hidden_dim=32, dim=48)
    ours.load_state_dict(reference.state_dict())
    ours.__class__ = DeviceFourierEncoding
    expected = reference(shape)
    got = ours(shape)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)


def test_backbone_uses_device_positional_encoding():
    from models.positional import DeviceFourierEncoding

    bb = build_backbone("edgenext_small")
    assert any(isinstance(m, DeviceFourierEncoding) for m in bb.modules())
    # the class changed, the parameter names did not
    assert any(k.endswith("pos_embd.token_projection.weight") for k in bb.model.state_dict())
