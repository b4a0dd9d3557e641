"""``python benchmarks/lab.py quality-report``: results of several quality-benchmark calls in one table."""
from __future__ import annotations

import json
from typing import Optional, Sequence, Tuple

import click
from click.core import ParameterSource

from cli.options import check_output_file


def check_reference(ctx: click.Context, reference: str, variants: Sequence[str], source: str) -> None:
    """A --reference that is none of ``variants`` is a usage error naming them (it would silently
    compare nothing). Left at its default (fpn) it is not: without an fpn run there is no comparison.

    Args:
        source: where the variants come from, for the message (e.g. ``"in the files"``).
    """
    if reference in variants or ctx.get_parameter_source("reference") is ParameterSource.DEFAULT:
        return
    raise click.BadParameter(f"{reference!r} is not one of the variants {source}: use one of {', '.join(variants)}.",
                             ctx, param_hint="--reference")


@click.command("quality-report")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--reference", default="fpn", show_default=True,
              help="Variant the others are compared with, seed by seed; one of the variants in FILES "
                   "(the default is skipped when no file holds fpn).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, callback=check_output_file, help="Write the merged result here.")
@click.pass_context
def quality_report(ctx: click.Context, files: Tuple[str, ...], reference: str, json_path: Optional[str]) -> None:
    """Merge `quality-benchmark --json` FILES (for example one seed per call) into one table.

    The files must come from the same command line but for --seeds: the same data, model and
    settings. Prints each variant's mean and standard deviation over all seeds and, for every
    variant, in how many seeds it was ahead of --reference on each measure.
    """
    from engine.files import atomic_write_text
    from benchmarks.quality_report import ResultFileError, format_quality_table, load_result, merge_results

    try:
        merged = merge_results([(f, load_result(f)) for f in files], reference=reference)
    except ResultFileError as exc:
        raise click.ClickException(str(exc)) from exc
    check_reference(ctx, reference, merged["variants"], "in the files")
    click.echo(format_quality_table(merged))
    if json_path:
        atomic_write_text(json_path, json.dumps(merged, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
