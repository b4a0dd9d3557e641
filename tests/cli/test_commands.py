"""The installed command line holds the user's commands and nothing of the lab."""
from click.testing import CliRunner

from train_ultimate import main

# The seven user commands of the product, and the demo page (an optional extra).
USER_COMMANDS = {"train", "evaluate", "predict", "export", "benchmark", "info", "make-synthetic", "demo"}


def test_the_command_line_lists_exactly_the_user_commands():
    assert set(main.commands) == USER_COMMANDS
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in USER_COMMANDS)


def test_benchmark_has_no_lab_options():
    options = {opt for param in main.commands["benchmark"].params for opt in param.opts}
    assert not {o for o in options if o.startswith("--predict")}, options
    assert {"--json", "--set", "--skip-attention", "--compile"} <= options
