"""The lab's command line: ``python benchmarks/lab.py COMMAND --help`` (or ``python -m benchmarks.lab``).

Commands that measure the product rather than use it: ``quality-benchmark`` (variants trained for
the same GPU time, then scored) and ``quality-report`` (several of its result files in one table).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

# Run as a file, the repository root is not on the path: the lab imports the product from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.quality_cli import quality_benchmark  # noqa: E402
from benchmarks.quality_report_cli import quality_report  # noqa: E402
from models.names import attention_backend_from_env  # noqa: E402

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """CamoXpert lab: quality-benchmark, quality-report."""
    try:
        attention_backend_from_env()  # a bad TORCH_SDPA_BACKEND fails here, before any work, as in the product
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


main.add_command(quality_benchmark)
main.add_command(quality_report)


if __name__ == "__main__":
    main()
