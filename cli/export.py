"""``train_ultimate.py export``: a checkpoint as an ONNX file, checked with onnxruntime."""
from __future__ import annotations

import json
from typing import Optional, Tuple

import click

from cli.options import check_output_file

__all__ = ["export"]


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="best.pt / last.pt written by `train`.")
@click.option("--output", required=True, type=click.Path(dir_okay=False), callback=check_output_file, help="The .onnx file to write.")
@click.option("--input-type", type=click.Choice(["float", "uint8"]), default="float", show_default=True,
              help="Graph input: float32 RGB in [0, 1] or uint8 RGB in [0, 255], NCHW; normalised inside the graph.")
@click.option("--sigmoid", is_flag=True, help="Output probabilities instead of logits.")
@click.option("--img-size", default=None,
              help="Tracing example and first check size (N or HxW, multiples of 32) [default: the checkpoint's training size].")
@click.option("--attention", type=click.Choice(["auto", "math"]), default="auto", show_default=True,
              help="Attention in the graph: auto = SDPA (exported as ONNX attention ops), math = explicit softmax(QK^T)V.")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="auto tries torch.onnx.export(dynamo=True), then the TorchScript exporter.")
@click.option("--opset", type=click.IntRange(min=17), default=18, show_default=True)
@click.option("--sample-images", multiple=True,
              help="Images (files, folders, globs) to check the export on [default: generated textured scenes].")
@click.option("--no-check", is_flag=True, help="Skip the onnxruntime comparison.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Largest allowed |ONNX - PyTorch| (fp32).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), callback=check_output_file, help="Write the export report here.")
def export(checkpoint: str, output: str, input_type: str, sigmoid: bool, img_size: Optional[str], attention: str,
           exporter: str, opset: int, sample_images: Tuple[str, ...], no_check: bool, tolerance: float,
           json_out: Optional[str]) -> None:
    """Export a checkpoint to ONNX (dynamic batch, height and width) and verify it with onnxruntime."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(f"{exc.name} is not installed: pip install -e '.[export]' (onnx, onnxscript, onnxruntime).")
    import torch

    from engine.checkpoint import CheckpointError
    from engine.files import atomic_write_text
    from engine.inference.onnx_export import check_onnx, export_onnx
    from engine.inference.predictor import load_inference_model
    from models import set_attention_backend

    try:
        loaded = load_inference_model(checkpoint, torch.device("cpu"), img_size)
        images = None
        if sample_images:
            from datasets import expand_inputs, read_image

            images = [read_image(p) for p in expand_inputs(list(sample_images))[:4]]
        set_attention_backend(loaded.model, attention)
        h, w = loaded.img_size
        click.echo(f"Exporting {checkpoint} ({'EMA' if loaded.used_ema else 'model'} weights, attention "
                   f"{'SDPA' if attention == 'auto' else 'math'}) -> {output}")
        result = export_onnx(loaded.model, output, example_size=(h, w), input_type=input_type, sigmoid=sigmoid,
                             exporter=exporter, opset=opset)
    except (CheckpointError, ValueError, OSError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    if result.fallback_reason:
        click.echo(f"dynamo exporter failed ({result.fallback_reason}); used the TorchScript exporter.")
    click.echo(f"Wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MB, {result.exporter} exporter, "
               f"opset {result.opset}); input 'images' {input_type} RGB NCHW (N, 3, 32*k, 32*m), output "
               f"'output' (N, 1, H, W) {'probabilities' if sigmoid else 'logits'}")
    if not no_check:
        shapes = ((1, h, w), (2, h + 64, max(32, w - 32)))
        try:
            checks = check_onnx(loaded.model, result, input_type, sigmoid, shapes=shapes, images=images)
        except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own types; the file is unusable
            result.path.unlink(missing_ok=True)
            raise click.ClickException(
                f"onnxruntime could not run the exported graph ({type(exc).__name__}: {str(exc).strip()[:300]}); "
                f"{result.path} was removed. Try --exporter torchscript."
            ) from exc
        for c in checks:
            click.echo(f"check onnxruntime vs PyTorch (fp32, CPU) at {c.shape}: max |diff| = {c.max_abs_diff:.2e}")
    passed = not result.checks or result.max_abs_diff <= tolerance
    report = {
        "onnx": str(result.path), "exporter": result.exporter, "opset": result.opset, "attention": attention,
        "input_type": input_type, "sigmoid": sigmoid, "tolerance": tolerance, "passed": passed,
        "checks": [{"shape": list(c.shape), "max_abs_diff": c.max_abs_diff} for c in result.checks],
    }
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2))
    if not passed:
        # A file that fails its own check must not be mistaken for a good export.
        result.path.unlink(missing_ok=True)
        raise click.ClickException(
            f"The ONNX output differs from PyTorch by {result.max_abs_diff:.2e} > {tolerance:.0e}, so {result.path} "
            f"was removed; try --attention math or --exporter torchscript (--no-check keeps an unchecked file)."
        )
    if result.checks:
        click.echo(f"OK: within {tolerance:.0e}")
