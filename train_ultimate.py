"""CamoXpert command line: ``python train_ultimate.py COMMAND --help``."""
from __future__ import annotations

import click

from cli.benchmark import benchmark
from cli.evaluate import evaluate
from cli.export import export
from cli.info import info
from cli.make_synthetic import make_synthetic
from cli.predict import predict
from cli.quality import quality_benchmark
from cli.train import train
from models.attention import attention_backend_from_env


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """CamoXpert: camouflaged object detection (train, evaluate, predict, export, benchmark, quality-benchmark, info)."""
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
main.add_command(quality_benchmark)

if __name__ == "__main__":
    main()
