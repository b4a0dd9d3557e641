"""Pretrained folders (model.safetensors + config.json + README.md): writing, loading back, Hub ids
from a local cache, refusals, ``export --format hf`` and the folder a ``train`` run leaves."""
import json
import socket
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from engine.inference.predictor import load_inference_model
from engine.sharing import PretrainedError, from_pretrained, resolve_model_source, save_pretrained
from engine.sharing.pretrained import NORMALIZATION
from _inference_fixtures import make_tiny_checkpoint, write_scene
from _train_helpers import TINY_ARGS, make_dataset, run_cli

FILES = {"model.safetensors", "config.json", "README.md"}
HUB_ID = "camo-lab/tiny-camoxpert"


@pytest.fixture(scope="module")
def best(tmp_path_factory):
    """A best.pt as `train` writes it: EMA weights stored as "model", with its validation record."""
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    ckpt = torch.load(make_tiny_checkpoint(path), weights_only=True)
    ckpt.update(weights="ema", step=40, epoch=2,
                metrics={"val_Sm": 0.81234, "val_MAE": 0.04567, "val_n": 7, "step": 40})
    ckpt["config"]["data"].update(val_fraction=0.25, dataset_paths=["/private/data/COD10K-v3"])
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def folder(best, tmp_path_factory):
    return save_pretrained(best, tmp_path_factory.mktemp("pre") / "pretrained")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i, size in enumerate([(50, 70), (64, 48)]):
        write_scene(root / f"scene{i}.png", None, size, seed=i)
    return root


def _copy_folder(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_round_trip_gives_identical_weights_and_outputs(best, folder):
    assert {p.name for p in folder.iterdir()} == FILES
    original = model_from_checkpoint(best)
    loaded = from_pretrained(folder)
    assert not loaded.training
    a, b = original.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(original(x), loaded(x))


def test_files_get_the_usual_permissions(folder):
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert len(set(modes.values())) == 1, modes  # the weights as readable as the config and card


def test_config_json_holds_model_input_size_normalisation_and_version(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 1 and config["input_size"] == [64, 64]
    assert config["model"]["dim"] == 16 and config["model"]["pretrained"] is False
    assert config["weights"] == "ema" and config["step"] == 40


def test_normalisation_matches_the_input_pipeline():
    from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD

    assert tuple(NORMALIZATION["mean"]) == IMAGENET_MEAN and tuple(NORMALIZATION["std"]) == IMAGENET_STD


def test_model_card_names_the_scores_and_their_split(folder):
    text = (folder / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["license"] == "mit" and front["library_name"] == "camoxpert"
    assert "camouflaged-object-detection" in front["tags"] and front["datasets"] == ["COD10K-v3"]
    assert "S-measure" in text and "0.8123" in text and "MAE" in text and "0.0457" in text
    assert "validation" in text and "not a test set" in text
    assert "/private/data" not in text  # data set paths are cut to folder names


def test_model_card_lists_evaluate_scores_per_test_set(best, tmp_path):
    scores = {"CAMO": {"n": 250, "Sm": 0.7012, "Em_mean": 0.7543, "Em_max": 0.8011, "wFm": 0.6012, "MAE": 0.0912}}
    text = (save_pretrained(best, tmp_path / "p", scores=scores) / "README.md").read_text()
    for word in ("CAMO", "mean E-measure", "0.7543", "max E-measure", "0.8011", "weighted F-measure", "0.6012"):
        assert word in text


def test_predict_model_folder_equals_predict_checkpoint_pixel_for_pixel(best, folder, images, tmp_path):
    outs = {}
    for option, value in (("--checkpoint", best), ("--model", folder)):
        out = tmp_path / option.strip("-")
        r = run_cli(["predict", option, str(value), "--input", str(images), "--output", str(out),
                     "--device", "cpu", "--num-workers", "0", "--no-progress"])
        assert r.exit_code == 0, r.output
        outs[option] = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(out.glob("*.png"))}
    assert outs["--checkpoint"].keys() == outs["--model"].keys() and len(outs["--model"]) == 2
    for name, mask in outs["--checkpoint"].items():
        assert np.array_equal(mask, outs["--model"][name]), name


def _hub_cache(root, folder, repo_id=HUB_ID, revision="0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face cache holding ``repo_id`` as huggingface_hub lays it out."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    _copy_folder(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return root


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, folder):
    """HF_HUB_OFFLINE=1 with a cache that holds HUB_ID; any network connection fails the test."""
    cache = _hub_cache(tmp_path / "hub", folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_hub_id_loads_offline_from_the_local_cache(offline_cache, best):
    source = resolve_model_source(HUB_ID)
    assert source.kind == "hub" and (source.path / "model.safetensors").is_file()
    loaded = load_inference_model(HUB_ID, torch.device("cpu"))
    assert loaded.img_size == (64, 64) and loaded.used_ema
    expected = model_from_checkpoint(best).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.model.state_dict().items())
    assert offline_cache == []


def test_missing_hub_id_offline_is_one_line_exit_2(offline_cache, images, tmp_path):
    r = run_cli(["predict", "--model", "camo-lab/not-there", "--input", str(images), "--output", str(tmp_path / "o"),
                 "--device", "cpu"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "camo-lab/not-there" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert "Traceback" not in r.output and offline_cache == []
    assert not (tmp_path / "o").exists()


def test_tampered_config_is_refused_naming_the_key(folder, tmp_path):
    bad = _copy_folder(folder, tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    config["model"]["dim"] = 24
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedError) as info:
        from_pretrained(bad)
    message = str(info.value)
    keys = load_file(str(bad / "model.safetensors")).keys()
    assert "config.json" in message and "shape" in message and any(f"{k}:" in message for k in keys)


def test_unexpected_key_is_refused_naming_it(folder, tmp_path):
    bad = _copy_folder(folder, tmp_path / "extra")
    weights = load_file(str(bad / "model.safetensors"))
    weights["decoder.stray.weight"] = torch.zeros(2)
    save_file(weights, str(bad / "model.safetensors"))
    with pytest.raises(PretrainedError, match="decoder.stray.weight"):
        from_pretrained(bad)


def test_nan_weight_is_refused_naming_the_tensor(folder, tmp_path, images):
    bad = _copy_folder(folder, tmp_path / "nan")
    weights = load_file(str(bad / "model.safetensors"))
    key = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 4)
    weights[key][0] = float("nan")
    save_file(weights, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        from_pretrained(bad)
    r = run_cli(["predict", "--model", str(bad), "--input", str(images), "--output", str(tmp_path / "o"),
                 "--device", "cpu"])
    assert r.exit_code == 2 and key in r.output and "Traceback" not in r.output


def test_run_folder_and_empty_folder_are_named(best, tmp_path):
    with pytest.raises(PretrainedError, match="best.pt"):
        resolve_model_source(best.parent)
    with pytest.raises(PretrainedError, match="config.json"):
        from_pretrained(tmp_path)


def test_export_format_hf_writes_the_three_files(best, tmp_path):
    out = tmp_path / "hf"
    r = run_cli(["export", "--format", "hf", "--checkpoint", str(best), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == FILES
    weights, expected = load_file(str(out / "model.safetensors")), load_checkpoint(best)["model"]
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)


def test_export_hf_output_must_be_a_folder(best, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("keep")
    r = run_cli(["export", "--output", str(blocker), "--checkpoint", str(best), "--format", "hf"])
    assert r.exit_code == 2 and "--output" in r.output and blocker.read_text() == "keep"


def test_push_to_hub_sends_the_folder_and_only_when_asked(best, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload(self, **kw):
        calls.append(("upload", kw["repo_id"], kw))
        assert {p.name for p in Path(kw["folder_path"]).iterdir()} >= FILES

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload)
    out = tmp_path / "hf"
    assert run_cli(["export", "--format", "hf", "--checkpoint", str(best), "--output", str(out)]).exit_code == 0
    assert calls == []  # writing a folder never uploads
    r = run_cli(["export", "--format", "hf", "--checkpoint", str(best), "--output", str(out),
                 "--push-to-hub", "camo-lab/published", "--private"])
    assert r.exit_code == 0, r.output
    assert [c[:2] for c in calls] == [("create", "camo-lab/published"), ("upload", "camo-lab/published")]
    assert calls[0][2]["private"] is True
    assert calls[1][2]["folder_path"] == str(out) and set(calls[1][2]["allow_patterns"]) == FILES
    assert "--model camo-lab/published" in (out / "README.md").read_text()  # the card names where it lives


def test_push_to_hub_offline_is_refused(best, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = run_cli(["export", "--format", "hf", "--checkpoint", str(best), "--output", str(tmp_path / "hf"),
                 "--push-to-hub", "camo-lab/published"])
    assert r.exit_code == 1 and "HF_HUB_OFFLINE" in r.output and "Traceback" not in r.output
    assert {p.name for p in (tmp_path / "hf").iterdir()} == FILES  # the folder is written all the same


def test_train_run_leaves_the_pretrained_folder_next_to_best(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=8, n_test=2)
    out = tmp_path / "run"
    r = run_cli(["train", "--dataset-path", str(data), "--checkpoint-dir", str(out), *TINY_ARGS, "--epochs", "1",
                 "--stage1-epochs", "0"])
    assert r.exit_code == 0, r.output
    assert (out / "best.pt").is_file() and {p.name for p in (out / "pretrained").iterdir()} == FILES
    weights = load_file(str(out / "pretrained" / "model.safetensors"))
    best = load_checkpoint(out / "best.pt")["model"]
    assert weights.keys() == best.keys() and all(torch.equal(weights[k], best[k]) for k in best)
    assert "S-measure" in (out / "pretrained" / "README.md").read_text()


def test_unknown_hub_id_online_is_one_line_exit_2(monkeypatch, images, tmp_path):
    import httpx2
    import huggingface_hub
    from huggingface_hub import constants, errors

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/models/camo-lab/x"))

    def not_found(repo_id, **kwargs):
        raise errors.RepositoryNotFoundError(f"404 {repo_id}", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    r = run_cli(["predict", "--model", "camo-lab/x", "--input", str(images), "--output", str(tmp_path / "o"),
                 "--device", "cpu"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "camo-lab/x" in r.output and "Hub" in r.output


def test_evaluate_takes_a_pretrained_folder(best, folder, tmp_path):
    from _inference_fixtures import write_cod10k_layout

    root = write_cod10k_layout(tmp_path / "COD10K-v3")
    scores = {}
    for option, value in (("--checkpoint", best), ("--model", folder)):
        out = tmp_path / f"{option.strip('-')}.json"
        r = run_cli(["evaluate", option, str(value), "--dataset-path", str(root), "--output-json", str(out),
                     "--device", "cpu", "--num-workers", "0", "--metric-workers", "0", "--no-progress"])
        assert r.exit_code == 0, r.output
        scores[option] = json.loads(out.read_text())["COD10K"]
    assert scores["--model"]["Sm"] == scores["--checkpoint"]["Sm"]
    assert scores["--model"]["MAE"] == scores["--checkpoint"]["MAE"]


def test_segmenter_round_trip_through_a_folder(best, tmp_path):
    from engine.inference import Segmenter

    seg = Segmenter(best, device="cpu")
    out = seg.save_pretrained(tmp_path / "seg")
    again = Segmenter.from_pretrained(out, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    assert np.array_equal(seg.predict(image), again.predict(image))


def test_attention_check_script_takes_a_pretrained_folder(folder):
    from _train_helpers import REPO, run_subprocess

    result = run_subprocess([sys.executable, str(REPO / "scripts" / "test_flash_attention.py"), "--model", str(folder),
                             "--device", "cpu", "--num-samples", "2", "--batch-size", "2"])
    output = result.stdout + result.stderr
    assert result.returncode in (0, 3), output  # 3: the router sent no checked image to attention
    assert "Traceback" not in output and "auto" in output
