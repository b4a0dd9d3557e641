"""``train_ultimate.py export``: a checkpoint as an ONNX file checked with onnxruntime, or as a pretrained folder
(``--format hf``: model.safetensors, config.json, README.md), optionally published on the Hugging Face Hub."""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Tuple

import click

from cli.options import FiniteFloatRange, InputError, check_output_file, model_option

if TYPE_CHECKING:  # imported where used, so that --help stays fast
    import numpy as np

    from engine.inference.onnx_export import ExportResult
    from engine.inference.predictor import InferenceModel

__all__ = ["export"]


def _check_opset(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """An opset the installed exporter does not know is a usage error (exit 2), found before any loading."""
    from engine.inference.onnx_export import supported_opsets

    low, high = supported_opsets()
    if not low <= value <= high:
        raise click.BadParameter(f"{value} is not supported: the installed torch.onnx exports opsets {low} to {high}.",
                                 ctx, param)
    return value


def _check_opset_for_exporter(opset: int, exporter: str) -> None:
    """An opset below what the dynamo exporter writes is a usage error (exit 2) for ``auto`` and
    ``dynamo``: torch would write its own lowest opset instead, and auto never falls back on it.

    Checked at the start of the command, not in --opset's callback: callbacks run in command-line
    order, so --exporter may not be parsed yet when --opset is.
    """
    from engine.inference.onnx_export import dynamo_min_opset

    low = dynamo_min_opset()
    if exporter != "torchscript" and opset < low:
        used = "the dynamo exporter" if exporter == "dynamo" else "the dynamo exporter (which --exporter auto uses)"
        raise click.BadParameter(f"{opset}: {used} writes opset {low} or newer. Use --exporter torchscript for "
                                 f"opset {opset}, or --opset {low} or newer.", param_hint="'--opset'")


def _kept(output: str) -> str:
    """What a failed export left at ``output``: nothing is ever written there unless the check passed."""
    if Path(output).exists():
        return f"the existing {output} was kept"
    return f"no file was written to {output}"


def _write_failed(output: str, exc: OSError) -> click.ClickException:
    """A failed write of the export (full disk, quota, I/O error) as one line naming ``--output``.

    ``export_onnx`` names the file it was given, the hidden temporary file next to ``--output``:
    the message is rebuilt from the original error for the file the user asked for.
    """
    from engine.files import write_error

    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    return click.ClickException(str(write_error(output, cause)))


@contextlib.contextmanager
def _staged_output(output: str) -> Iterator[Path]:
    """:func:`~engine.inference.onnx_export.staged_onnx` for ``--output``, whose own failures
    (creating, flushing or renaming the temporary file) are one-line errors, not tracebacks."""
    from engine.files import FileWriteError
    from engine.inference.onnx_export import staged_onnx

    try:
        with staged_onnx(output) as staged:
            yield staged
    except FileWriteError as exc:  # it names --output and says that the file there is intact
        raise click.ClickException(str(exc)) from exc


def _check_output(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--output: a writable file for ``onnx``, a folder (or a path to create one) for ``hf``.

    ``--format`` is eager, so it is known here whatever the order of the options.
    """
    if ctx.params.get("fmt", "onnx") == "hf":
        if Path(value).is_file():
            raise click.BadParameter(f"{value} is a file: --format hf writes a folder (model.safetensors, "
                                     f"config.json, README.md); give a folder path.", ctx, param)
        check_output_file(ctx, param, str(Path(value) / "config.json"))
        return value
    if Path(value).is_dir():
        raise click.BadParameter(f"{value!r} is a directory: give the .onnx file to write, or use --format hf "
                                 f"to write a pretrained folder.", ctx, param)
    return check_output_file(ctx, param, value)


@dataclass(frozen=True)
class _OnnxRequest:
    """The ``--format onnx`` choices of ``export`` (see the command's options for each).

    Args:
        input_type: ``float`` or ``uint8`` graph input.
        sigmoid: output probabilities instead of logits.
        img_size: tracing example and first check size (None: the checkpoint's training size).
        attention: ``auto`` (SDPA) or ``math``.
        exporter: ``auto``, ``dynamo`` or ``torchscript``.
        opset: ONNX opset.
        sample_images: images (files, folders, globs) to check on; empty: generated scenes.
        check: compare the graph with PyTorch in onnxruntime (``--no-check`` turns it off).
        tolerance: largest allowed ``|ONNX - PyTorch|``.
        json_out: where the export report goes (None: no report).
    """

    input_type: str
    sigmoid: bool
    img_size: Optional[str]
    attention: str
    exporter: str
    opset: int
    sample_images: Tuple[str, ...]
    check: bool
    tolerance: float
    json_out: Optional[str]


def _export_hf(checkpoint: str, output: str, push_to_hub: Optional[str], private: bool,
               scores_json: Optional[str]) -> None:
    """``--format hf``: write the pretrained folder, then upload it when --push-to-hub asks for it."""
    from engine.checkpoint import CheckpointError
    from engine.files import FileWriteError
    from engine.sharing.publish import export_pretrained, push_to_hub as push, read_scores
    from engine.sharing.source import parse_hub_id

    if push_to_hub is not None and (parse_hub_id(push_to_hub) is None or "@" in push_to_hub):
        raise click.BadParameter(f"{push_to_hub!r} is not a Hub repository id: use user/name.",
                                 param_hint="'--push-to-hub'")
    try:
        scores = read_scores(scores_json) if scores_json else None
        folder = export_pretrained(checkpoint, output, scores=scores, repo_id=push_to_hub)
    except CheckpointError as exc:
        raise InputError(str(exc)) from exc
    except FileWriteError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Wrote {folder}/ (model.safetensors, config.json, README.md)")
    if push_to_hub is not None:
        try:
            url = push(folder, push_to_hub, private=private, log=click.echo)
        except CheckpointError as exc:  # PretrainedError: offline, login, network; the folder is written
            raise click.ClickException(str(exc)) from exc
        click.echo(f"Published {url}")


@click.command()
@model_option
@click.option("--format", "fmt", type=click.Choice(["onnx", "hf"]), default="onnx", show_default=True, is_eager=True,
              help="onnx: one .onnx file, checked with onnxruntime. hf: a folder with model.safetensors, config.json "
                   "and a README.md model card (the Hugging Face / segmentation_models_pytorch layout).")
@click.option("--output", required=True, type=click.Path(), callback=_check_output,
              help="The .onnx file to write (replaced only by an export that passes its check); with --format hf, "
                   "the folder to write.")
@click.option("--push-to-hub", "push_to_hub", metavar="USER/NAME", default=None,
              help="With --format hf: also upload the folder to this Hugging Face Hub repository (created if "
                   "missing; needs `hf auth login`). Nothing is uploaded without it.")
@click.option("--private", is_flag=True, help="With --push-to-hub: create the repository private.")
@click.option("--scores", "scores_json", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --format hf: add the test-set scores of this `evaluate --output-json` file to the model card.")
@click.option("--input-type", type=click.Choice(["float", "uint8"]), default="float", show_default=True,
              help="Graph input: float32 RGB in [0, 1] or uint8 RGB in [0, 255], NCHW; normalised inside the graph.")
@click.option("--sigmoid", is_flag=True, help="Output probabilities instead of logits.")
@click.option("--img-size", default=None,
              help="Tracing example and first check size (N or HxW, multiples of 32) [default: the checkpoint's training size].")
@click.option("--attention", type=click.Choice(["auto", "math"]), default="auto", show_default=True,
              help="Attention in the graph: auto = SDPA (exported as ONNX attention ops), math = explicit softmax(QK^T)V.")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="auto tries torch.onnx.export(dynamo=True), then the TorchScript exporter.")
@click.option("--opset", type=int, default=18, show_default=True, callback=_check_opset,
              help="ONNX opset, from 17 to the newest the installed torch.onnx knows; the dynamo exporter (auto, "
                   "dynamo) writes none below its own lowest (18 with torch 2.15): use --exporter torchscript there.")
@click.option("--sample-images", multiple=True,
              help="Images (files, folders, globs) to check the export on [default: generated textured scenes].")
@click.option("--no-check", is_flag=True, help="Skip the onnxruntime comparison.")
@click.option("--tolerance", type=FiniteFloatRange(min=0), default=1e-4, show_default=True,
              help="Largest allowed |ONNX - PyTorch| (fp32).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), callback=check_output_file, help="Write the export report here.")
def export(checkpoint: str, fmt: str, output: str, push_to_hub: Optional[str], private: bool,
           scores_json: Optional[str], input_type: str, sigmoid: bool, img_size: Optional[str], attention: str,
           exporter: str, opset: int, sample_images: Tuple[str, ...], no_check: bool, tolerance: float,
           json_out: Optional[str]) -> None:
    """Export a trained model to ONNX (dynamic batch, height and width, verified with onnxruntime), or with
    --format hf to a pretrained folder that `predict --model`, `evaluate` and from_pretrained load."""
    if fmt == "hf":
        _export_hf(checkpoint, output, push_to_hub, private, scores_json)
        return
    if push_to_hub or scores_json:
        raise click.UsageError("--push-to-hub and --scores go with --format hf.")
    _export_onnx(checkpoint, output, _OnnxRequest(
        input_type=input_type, sigmoid=sigmoid, img_size=img_size, attention=attention, exporter=exporter,
        opset=opset, sample_images=sample_images, check=not no_check, tolerance=tolerance, json_out=json_out))


def _export_onnx(checkpoint: str, output: str, request: _OnnxRequest) -> None:
    """``--format onnx``: export, check against PyTorch, report; ``output`` is replaced only on success."""
    _check_opset_for_exporter(request.opset, request.exporter)
    _require_export_packages()
    loaded, images = _load_for_export(checkpoint, request)
    trained = (loaded.run_config.get("data") or {}).get("img_size")
    # The size it was trained at is what a user of the ONNX file should feed it (dynamic axes accept any).
    click.echo(f"Exporting {checkpoint} ({'EMA' if loaded.used_ema else 'model'} weights, trained at "
               f"{f'{trained} px' if trained else 'an unrecorded size'}, checked at {loaded.img_size[0]}x"
               f"{loaded.img_size[1]}, attention {'SDPA' if request.attention == 'auto' else 'math'}) -> {output}")
    # Exported and checked in a temporary file next to --output, which replaces it only once the
    # check passed: a failed re-export must not destroy the good file already there.
    with _staged_output(output) as staged:
        result = _write_onnx(loaded, staged, output, request)
        _check_with_onnxruntime(loaded, result, images, output, request)
        # With --no-check nothing was compared: the report says so instead of claiming a pass.
        passed = result.max_abs_diff <= request.tolerance if request.check else None
        if request.json_out:
            _write_report(output, result, request, passed)
        if passed is False:
            raise click.ClickException(
                f"The ONNX output differs from PyTorch by {result.max_abs_diff:.2e} > {request.tolerance:.0e}, so "
                f"it was not written ({_kept(output)}); try --attention math or --exporter torchscript (--no-check "
                f"writes an unchecked file)."
            )
    result.path = Path(output)
    if passed:
        click.echo(f"OK: within {request.tolerance:.0e}")
    click.echo(f"Wrote {output}")


def _require_export_packages() -> None:
    """Whether the ONNX packages are installed is decided before any loading: a missing one is one line."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(f"{exc.name} is not installed: pip install -e '.[export]' (onnx, onnxscript, onnxruntime).")


def _load_for_export(checkpoint: str, request: _OnnxRequest) -> Tuple[InferenceModel, Optional[List[np.ndarray]]]:
    """The checkpoint's model on the CPU with the chosen attention, and the sample images to check on.

    A bad checkpoint, sample image or attention backend is an :class:`~cli.options.InputError`;
    a runtime failure while loading is a plain error.
    """
    import torch

    from engine.checkpoint import CheckpointError
    from engine.inference.predictor import load_inference_model
    from models import set_attention_backend

    try:
        loaded = load_inference_model(checkpoint, torch.device("cpu"), request.img_size)
        images = None
        if request.sample_images:
            from datasets import expand_inputs, read_image

            images = [read_image(p) for p in expand_inputs(list(request.sample_images))[:4]]
        set_attention_backend(loaded.model, request.attention)
    except (CheckpointError, ValueError, OSError) as exc:  # the checkpoint, a sample image, the backend
        raise InputError(str(exc)) from exc
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    return loaded, images


def _write_onnx(loaded: InferenceModel, staged: Path, output: str, request: _OnnxRequest) -> ExportResult:
    """Export the model to ``staged`` and say what was written; an export failure names what ``output`` kept."""
    from engine.files import FileWriteError
    from engine.inference.onnx_export import export_onnx

    try:
        result = export_onnx(loaded.model, staged, example_size=tuple(loaded.img_size), input_type=request.input_type,
                             sigmoid=request.sigmoid, exporter=request.exporter, opset=request.opset)
    except FileWriteError as exc:  # full disk, quota, I/O error: the disk's fault, not the exporter's
        raise _write_failed(output, exc) from exc
    except (ValueError, OSError, RuntimeError) as exc:
        raise click.ClickException(f"{exc} ({_kept(output)})") from exc
    if result.fallback_reason:
        click.echo(f"dynamo exporter failed ({result.fallback_reason}); used the TorchScript exporter.")
    click.echo(f"Exported {result.path.stat().st_size / 2**20:.1f} MB ({result.exporter} exporter, opset "
               f"{result.opset}); input 'images' {request.input_type} RGB NCHW (N, 3, 32*k, 32*m), output "
               f"'output' (N, 1, H, W) {'probabilities' if request.sigmoid else 'logits'}")
    return result


def _check_with_onnxruntime(loaded: InferenceModel, result: ExportResult, images: Optional[List[np.ndarray]],
                            output: str, request: _OnnxRequest) -> None:
    """Run the exported graph with onnxruntime at two shapes and print its distance to PyTorch.

    ``check_onnx`` records the distances in ``result``; whether they pass is the caller's call.
    """
    from engine.inference.onnx_export import check_onnx

    if not request.check:
        click.echo("Check skipped (--no-check): the file was not run with onnxruntime.")
        return
    h, w = loaded.img_size
    shapes = ((1, h, w), (2, h + 64, max(32, w - 32)))
    try:
        checks = check_onnx(loaded.model, result, request.input_type, request.sigmoid, shapes=shapes, images=images)
    except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own types; the file is unusable
        raise click.ClickException(
            f"onnxruntime could not run the exported graph ({type(exc).__name__}: {str(exc).strip()[:300]}); "
            f"{_kept(output)}. Try --exporter torchscript."
        ) from exc
    for c in checks:
        click.echo(f"check onnxruntime vs PyTorch (fp32, CPU) at {c.shape}: max |diff| = {c.max_abs_diff:.2e}")


def _write_report(output: str, result: ExportResult, request: _OnnxRequest, passed: Optional[bool]) -> None:
    """The ``--json`` export report; a failure to write it drops the export too, as any failure does."""
    from engine.files import FileWriteError, atomic_write_text

    report = {
        "onnx": output, "exporter": result.exporter, "opset": result.opset, "attention": request.attention,
        "input_type": request.input_type, "sigmoid": request.sigmoid, "tolerance": request.tolerance,
        "checked": request.check, "passed": passed,
        "checks": [{"shape": list(c.shape), "max_abs_diff": c.max_abs_diff} for c in result.checks],
    }
    try:
        atomic_write_text(request.json_out, json.dumps(report, indent=2))
    except FileWriteError as exc:  # names json_out; the export is dropped with it, as on any failure
        raise click.ClickException(f"{exc} The ONNX export was not saved either ({_kept(output)}).") from exc
