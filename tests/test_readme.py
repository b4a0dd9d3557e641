"""The README's examples work: its Python blocks run as pasted, its shell lines name real commands and options."""
import re
import shlex
from pathlib import Path

import click
import pytest

from _inference_fixtures import make_tiny_checkpoint
from train_ultimate import main

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(language: str):
    """``(line number, code)`` of every fenced block of ``language`` in the README."""
    text = README.read_text(encoding="utf-8")
    return [(text[:m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == language]


def _shell_commands():
    """Every shell line of the README that runs the CLI: ``(line, command name, argument tokens)``."""
    found = []
    for start, code in _blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens[:1] == ["camoxpert"]:
                found.append((line, tokens[1], tokens[2:]))
            elif "train_ultimate.py" in tokens:
                at = tokens.index("train_ultimate.py")
                found.append((line, tokens[at + 1], tokens[at + 2:]))
    return found


def _option_names(command: click.Command) -> set:
    names = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def test_readme_fits_in_five_minutes():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_quick_start_commands_are_kept():
    shell = "\n".join(code for _, code in _blocks("bash"))
    for line in ('pip install -e ".[dev]"', "python train_ultimate.py train", "python -m pytest -q"):
        assert line in shell


def test_every_user_command_has_an_example():
    shown = {name for _, name, _ in _shell_commands()}
    assert {"train", "evaluate", "predict", "export", "benchmark", "info", "make-synthetic"} <= shown


@pytest.mark.parametrize("line, name, args", _shell_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_shell_lines_name_real_commands_and_options(line, name, args):
    assert name in main.commands, f"{line!r}: no command {name!r}"
    known = _option_names(main.commands[name])
    given = [a.split("=", 1)[0] for a in args if a.startswith("-") and not re.fullmatch(r"-\d[\d.]*", a)]
    unknown = [a for a in given if a not in known]
    assert not unknown, f"{line!r}: {name} has no option {unknown}"


@pytest.mark.parametrize("start, code", _blocks("python"), ids=lambda v: f"README.md:{v}" if isinstance(v, int) else None)
def test_python_blocks_run_as_pasted(start, code, tmp_path, monkeypatch):
    # The state a reader has after the quick start: a checkpoint in checkpoints/, the working directory.
    make_tiny_checkpoint(tmp_path / "checkpoints" / "best.pt")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{start}", "exec"), {"__name__": "__main__"})
