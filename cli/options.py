"""Click options shared by the commands that run a trained checkpoint (evaluate, predict) and the device check."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import click

__all__ = [
    "FiniteFloatRange",
    "InputError",
    "check_device_option",
    "check_img_size_option",
    "check_output_file",
    "check_tta_scales_option",
    "inference_options",
    "model_option",
]


class InputError(click.ClickException):
    """A bad input: a checkpoint, data set folder, image, output folder or value that cannot be used.

    Exit code 2, as click gives a usage error (one convention: input and usage errors 2, failures
    while working 1), printed as ``Error: <message>`` without the usage text, since the command
    line itself was well formed. The message names the file and the fix.
    """

    exit_code = 2


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf`` (usage error, exit code 2).

    Click's range checks are comparisons, which NaN passes: ``--lr nan`` or ``--threshold nan``
    would otherwise run and fail later (a NaN loss, every pixel background), and ``--seconds inf``
    would train forever.
    """

    name = "finite float range"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def check_device_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A device name torch cannot parse is a usage error (exit code 2), found before any loading."""
    from engine.runtime import check_device_name

    try:
        check_device_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).replace(f"--device {value!r} ", f"{value!r} "), ctx, param) from None
    return value


def check_img_size_option(ctx: click.Context, param: click.Parameter, value: Optional[int]) -> Optional[int]:
    """--img-size must be a positive multiple of 32 (the backbone's stride): a usage error naming
    the nearest valid sizes, before any model is built."""
    if value is None:
        return None
    from engine.inference.predictor import parse_img_size

    try:
        parse_img_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).replace("Image size ", "", 1), ctx, param) from None
    return value


def check_output_file(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """An output file this process cannot write is a usage error (exit code 2), found before any work.

    Checked by creating a temporary file in its folder, or in the nearest folder above it that
    exists (the atomic writers create the missing ones): permission bits, read-only mounts and
    paths under /proc all show in a second, instead of as a traceback after minutes or hours of
    work whose result would then be lost. Nothing is left on disk.
    """
    import tempfile
    from pathlib import Path

    if value is None:
        return None
    folder = Path(value).absolute().parent  # a folder itself is refused by click.Path(dir_okay=False)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise click.BadParameter(
            f"cannot write {value} ({reason} in {folder}): choose a path in a folder you can write to.", ctx, param
        ) from None
    return value


def check_tta_scales_option(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Tuple[float, ...]:
    """``--tta-scales 0.75,1,1.25`` -> ``(0.75, 1.0, 1.25)``; a bad scale is a usage error (exit code 2)."""
    from engine.inference.predictor import parse_tta_scales

    try:
        return parse_tta_scales(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


_INFERENCE_OPTIONS = (
    click.option("--tta", is_flag=True, help="Test-time augmentation: average with the horizontally flipped image."),
    click.option("--tta-scales", default="1.0", show_default=True, callback=check_tta_scales_option,
                 help="Comma-separated input scales to average over, e.g. 0.75,1,1.25."),
    click.option("--batch-size", default=None, type=click.IntRange(min=1),
                 help="Images per forward pass [default: 32 on a GPU, 8 on the CPU]."),
    click.option("--num-workers", default=None, type=click.IntRange(min=0),
                 help="Decoding worker processes [default: up to 4, up to 8 on a GPU]."),
    click.option("--device", default="auto", show_default=True, callback=check_device_option, help="auto, cpu, cuda, cuda:N."),
    click.option("--img-size", default=None,
                 help="Network input size (N or HxW, multiples of 32) [default: the checkpoint's training size, else 384]."),
    click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
                 help="Autocast on GPU: auto picks bf16 where supported, else fp16; CPU runs fp32."),
)


def model_option(command: Callable) -> Callable:
    """``--checkpoint``/``--model``: a checkpoint file, a pretrained folder or a Hugging Face Hub id.

    A plain string, not ``click.Path``: a folder and ``user/name`` are valid values, and
    :func:`engine.sharing.resolve_model_source` tells them apart when the model is loaded.
    """
    return click.option(
        "--checkpoint", "--model", "checkpoint", required=True, metavar="FILE|DIR|USER/NAME",
        help="The trained model: best.pt / last.pt written by `train`, a folder written by `export --format hf` "
             "(model.safetensors + config.json), or a Hugging Face Hub id user/name[@revision] "
             "(read from the local HF cache when HF_HUB_OFFLINE=1).")(command)


def resolve_batch_size(batch_size: Optional[int], device: str) -> int:
    """``--batch-size`` as given, else 32 on a GPU (the batch ``benchmark --predict`` measures) or 8 on the CPU."""
    if batch_size:
        return batch_size
    from engine.runtime import resolve_device

    try:
        return 32 if resolve_device(device).type == "cuda" else 8
    except ValueError as exc:  # e.g. --device cuda without CUDA: the message names the fix
        raise InputError(str(exc)) from exc


def inference_options(command: Callable) -> Callable:
    """Add --tta, --tta-scales, --batch-size, --num-workers, --device, --img-size, --precision."""
    for option in reversed(_INFERENCE_OPTIONS):
        command = option(command)
    return command
