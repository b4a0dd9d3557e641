"""Start-up cost: the entry script and option parsing import no heavy library.

Pixel-check worker processes (``spawn``) re-import the entry script, so a heavy import there
is paid once per worker before any file is decoded, on top of the parent's own start-up.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "timm", "torchvision", "albumentations", "matplotlib", "tensorboard", "onnx", "onnxruntime")


def _modules_after(code: str) -> set:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_importing_the_entry_script_loads_no_heavy_library():
    loaded = _modules_after("import train_ultimate")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "cv2" not in loaded


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "benchmark", "export", "info",
                                     "make-synthetic"])
def test_command_help_loads_no_heavy_library(command):
    loaded = _modules_after(
        "import sys\nfrom click.testing import CliRunner\nfrom train_ultimate import main\n"
        f"r = CliRunner().invoke(main, [{command!r}, '--help'])\nassert r.exit_code == 0, r.output"
    )
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_models_package_names_without_torch():
    loaded = _modules_after("from models import SUPPORTED_BACKBONES, ATTENTION_BACKENDS, attention_backend_from_env")
    assert "torch" not in loaded
    loaded = _modules_after("from models import build_model")
    assert "torch" in loaded and "models.camoxpert" in loaded


def test_models_lazy_exports_are_the_defining_objects():
    import models
    from models.attention import resolve_attention_backend
    from models.backbone import SUPPORTED_BACKBONES
    from models.camoxpert import build_model

    assert models.build_model is build_model
    assert models.resolve_attention_backend is resolve_attention_backend
    assert models.SUPPORTED_BACKBONES is SUPPORTED_BACKBONES
    assert set(models.__all__) <= set(dir(models))
    with pytest.raises(AttributeError, match="no_such_name"):
        models.no_such_name  # noqa: B018
