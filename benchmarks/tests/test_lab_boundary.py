"""The lab sits beside the product: not installed, imported by nothing in it, with its own CLI."""
import ast
import configparser
from pathlib import Path

import pytest
from click.testing import CliRunner
from setuptools import find_packages

from benchmarks.lab import main

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("models", "datasets", "engine", "cli")


def _imported_roots(path: Path) -> set:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_product_module_imports_the_lab():
    files = [p for package in PRODUCT for p in (REPO / package).rglob("*.py")] + [REPO / "train_ultimate.py"]
    offenders = [str(p.relative_to(REPO)) for p in files if "benchmarks" in _imported_roots(p)]
    assert not offenders


def test_the_package_list_of_setup_cfg_leaves_the_lab_out():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    include = cfg["options.packages.find"]["include"].split()
    found = find_packages(where=str(REPO), include=include)
    assert "engine.training" in found and "cli" in found
    assert not [p for p in found if p.split(".")[0] in ("benchmarks", "scripts", "tests")], found
    assert "benchmarks/tests" in cfg["tool:pytest"]["testpaths"].split()


def test_lab_lists_its_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert set(main.commands) == {"quality-benchmark", "quality-report"}


@pytest.mark.parametrize("command", [["quality-benchmark", "--device", "cpu"], ["quality-report", "RESULT"]])
def test_unwritable_json_is_refused_before_any_work(tmp_path, command):
    result_file = tmp_path / "r.json"
    result_file.write_text("{}")
    args = [str(result_file) if a == "RESULT" else a for a in command]
    for target, words in (("/proc/camoxpert/out.json", ["cannot write", "/proc/camoxpert/out.json"]),
                          (str(tmp_path), ["is a directory"])):
        r = CliRunner().invoke(main, [*args, "--json", target])
        assert r.exit_code == 2, r.output
        assert "--json" in r.output and all(w in r.output for w in words), r.output


def test_a_bad_attention_backend_in_the_environment_stops_the_lab_before_work(monkeypatch):
    monkeypatch.setenv("TORCH_SDPA_BACKEND", "nonsense")
    result = CliRunner().invoke(main, ["quality-report", "missing.json"])
    assert result.exit_code == 1 and "TORCH_SDPA_BACKEND" in result.output
