"""Fixtures shared by the inference tests: a tiny checkpoint and a small COD10K-v3 folder, made once per module."""
from pathlib import Path

import pytest

from _inference_fixtures import make_tiny_checkpoint, write_cod10k_layout


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A best.pt holding a small random model (64 px)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def cod10k(tmp_path_factory) -> Path:
    """A COD10K-v3 layout with two training and five test images of odd sizes."""
    return write_cod10k_layout(tmp_path_factory.mktemp("data") / "COD10K-v3")
