"""``train_ultimate.py quality-report``: results of several quality-benchmark calls in one table."""
from __future__ import annotations

import json
from typing import Optional, Tuple

import click

from cli.options import check_output_file


@click.command("quality-report")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--reference", default="fpn", show_default=True,
              help="Variant the others are compared with, seed by seed.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, callback=check_output_file, help="Write the merged result here.")
def quality_report(files: Tuple[str, ...], reference: str, json_path: Optional[str]) -> None:
    """Merge `quality-benchmark --json` FILES (for example one seed per call) into one table.

    The files must come from the same command line but for --seeds: the same data, model and
    settings. Prints each variant's mean and standard deviation over all seeds and, for every
    variant, in how many seeds it was ahead of --reference on each measure.
    """
    from engine.files import atomic_write_text
    from engine.tools.quality_report import ResultFileError, format_quality_table, load_result, merge_results

    try:
        merged = merge_results([(f, load_result(f)) for f in files], reference=reference)
    except ResultFileError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_quality_table(merged))
    if json_path:
        atomic_write_text(json_path, json.dumps(merged, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
