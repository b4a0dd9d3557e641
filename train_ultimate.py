"""CamoXpert command line: ``python train_ultimate.py COMMAND --help``."""
from __future__ import annotations

import time

#: When the process launched (before the imports below, which take seconds): ``train`` counts
#: its start-up and its images per wall second from here.
LAUNCHED_AT = time.perf_counter()

import click  # noqa: E402

from cli.benchmark import benchmark  # noqa: E402
from cli.demo import demo  # noqa: E402
from cli.evaluate import evaluate  # noqa: E402
from cli.export import export  # noqa: E402
from cli.info import info  # noqa: E402
from cli.make_synthetic import make_synthetic  # noqa: E402
from cli.predict import predict  # noqa: E402
from cli.train import train  # noqa: E402
from models.names import attention_backend_from_env  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """CamoXpert: camouflaged object detection (train, evaluate, predict, export, benchmark, info, make-synthetic, demo)."""
    try:
        attention_backend_from_env()  # a bad TORCH_SDPA_BACKEND fails here, before any work
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


main.add_command(info)
main.add_command(train)
main.add_command(evaluate)
main.add_command(predict)
main.add_command(benchmark)
main.add_command(export)
main.add_command(make_synthetic)
main.add_command(demo)


def cli_entry() -> None:
    """The program's entry point (``python train_ultimate.py``, the ``camoxpert`` command)."""
    main(obj={"launched_at": LAUNCHED_AT})


if __name__ == "__main__":
    cli_entry()
