"""ONNX export of a trained model, checked against PyTorch with onnxruntime.

The exported graph takes RGB images, NCHW, with a dynamic batch, height and width (height and
width multiples of 32), and normalises them inside (ImageNet mean/std), so callers feed plain
pixels:

* ``input_type="float"`` (default): ``float32`` in [0, 1];
* ``input_type="uint8"``: ``uint8`` in [0, 255] (the graph divides by 255).

It outputs ``(N, 1, H, W)`` logits, or probabilities with ``sigmoid=True``. Attention is
exported through the model's current backend: SDPA (``auto``) becomes ONNX's attention ops
(MatMul/Softmax, or the opset-23 ``Attention`` op), ``math`` the explicit
``softmax(Q K^T * scale) V``; :func:`compare_attention_exports` checks that both agree.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from engine.files import staged_path, write_error
from models import set_attention_backend

__all__ = [
    "INPUT_TYPES",
    "ExportCheck",
    "ExportResult",
    "NormalizedModel",
    "attention_backends_of",
    "check_onnx",
    "compare_attention_exports",
    "dynamo_min_opset",
    "export_onnx",
    "sample_inputs",
    "staged_onnx",
    "supported_opsets",
]

INPUT_TYPES = ("float", "uint8")
_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics the backbone was trained with
_STD = (0.229, 0.224, 0.225)
PathLike = Union[str, os.PathLike]


class NormalizedModel(nn.Module):
    """The network with ImageNet normalisation in front and an optional sigmoid behind.

    Args:
        model: eval-mode network returning ``(N, 1, H, W)`` logits.
        input_type: ``float`` ([0, 1] float32) or ``uint8`` ([0, 255]).
        sigmoid: return probabilities instead of logits.
    """

    def __init__(self, model: nn.Module, input_type: str = "float", sigmoid: bool = False) -> None:
        super().__init__()
        if input_type not in INPUT_TYPES:
            raise ValueError(f"input_type={input_type!r}: use one of {', '.join(INPUT_TYPES)}.")
        self.model = model.eval()
        self.input_type = input_type
        self.sigmoid = bool(sigmoid)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.input_type == "uint8":
            x = x / 255.0
        out = self.model((x - self.mean) / self.std)  # (N, 1, H, W) logits
        return torch.sigmoid(out) if self.sigmoid else out


@dataclass
class ExportCheck:
    """One onnxruntime-vs-PyTorch comparison: input shape and the largest absolute difference."""

    shape: Tuple[int, ...]
    max_abs_diff: float


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how it was checked.

    Attributes:
        path: the ``.onnx`` file.
        exporter: ``dynamo`` (``torch.onnx.export(dynamo=True)``) or ``torchscript`` (fallback).
        attention: the attention backend(s) the exported model ran (``auto`` = SDPA, ``math``).
        opset: ONNX opset of the file.
        checks: onnxruntime comparisons (empty when not verified).
        fallback_reason: why the dynamo exporter was not used, when it was not.
    """

    path: Path
    exporter: str
    attention: List[str]
    opset: int
    checks: List[ExportCheck] = field(default_factory=list)
    fallback_reason: Optional[str] = None

    @property
    def max_abs_diff(self) -> float:
        """Largest difference over all checks (0 when none ran)."""
        return max((c.max_abs_diff for c in self.checks), default=0.0)


def attention_backends_of(model: nn.Module) -> List[str]:
    """The distinct attention backends of the model's attention modules (sorted)."""
    return sorted({m.attn_backend for m in model.modules() if hasattr(m, "attn_backend")})


def supported_opsets() -> Tuple[int, int]:
    """The ``opset`` range :func:`export_onnx` accepts, lowest and highest.

    17 is what the TorchScript fallback writes (it caps the opset there); the highest is the
    newest opset the installed ``torch.onnx`` knows. Above it the dynamo exporter's version
    conversion fails with only a log line and leaves a graph that onnxruntime refuses.
    """
    from torch.onnx._constants import ONNX_MAX_OPSET

    return 17, int(ONNX_MAX_OPSET)


def dynamo_min_opset() -> int:
    """The lowest opset the dynamo exporter (``torch.onnx.export(dynamo=True)``) writes.

    It is the opset torch's ONNX implementations of the aten ops (torchlib) are written in. Asked
    for less, torch exports at this opset and tries onnx's version converter, which fails on these
    graphs (dynamic shapes give ``ReduceMean``/``Squeeze`` computed axes it cannot turn into
    attributes); torch only logs that and writes this opset anyway. :func:`export_onnx` refuses
    such a request instead. Read from torch (a private constant, like ``ONNX_MAX_OPSET`` above, as
    torch exposes no public one) so a torch whose torchlib moves on moves the limit with it.
    """
    from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET

    return int(TORCHLIB_OPSET)


class _WriteFailed(Exception):
    """Writing an exported graph to disk failed (full disk, quota, I/O error).

    Kept apart from exporter failures: the other exporter would hit the same disk, so
    :func:`export_onnx` reports it as a write error instead of falling back or blaming the exporter.
    """

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """Marks where an exporter writes its file: an OSError there is the disk's, raised as :class:`_WriteFailed`."""
    try:
        yield
    except OSError as exc:
        raise _WriteFailed(exc) from exc


def staged_onnx(path: PathLike) -> ContextManager[Path]:
    """A hidden temporary file next to ``path`` (``.NAME.XXXX.onnx.tmp``) that replaces ``path``
    only when the block exits cleanly.

    Write (and check) the export there: an export that fails, is rejected by its check or is
    interrupted removes the temporary file and leaves an existing ``path`` as it was, so a good
    earlier export is never lost to a bad one. Exports are single files (no external data, see
    :func:`export_onnx`), so there are no side files to move or remove.

    Raises:
        engine.files.FileWriteError: the folder or the temporary file cannot be created, or the
            file cannot be flushed to disk or renamed (:class:`~engine.files.DiskFullError` when
            the disk or quota is full); the message names ``path``. Errors raised by the block
            pass through unchanged.
    """
    return staged_path(path, suffix=".onnx.tmp")


def _dynamic_shapes():
    # Height and width are 32 * k: the backbone's stride. Expressing that lets torch.export
    # prove the model's divisibility check instead of specialising on the example's size.
    from torch.export import Dim

    batch = Dim("batch", min=1, max=1024)
    h32 = Dim("h32", min=1, max=256)
    w32 = Dim("w32", min=1, max=256)
    return {"images": {0: batch, 2: 32 * h32, 3: 32 * w32}}


def _export_dynamo(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=["images"], output_names=["output"],
            dynamic_shapes=_dynamic_shapes(), opset_version=opset, external_data=False,
        )
    # external_data=False: one self-contained file (above 2 GB save would otherwise write a side
    # file named after the temporary file, which a rename would then orphan). The largest
    # configuration, edgenext_base with MoE on every level, is about 100 MB.
    with _writing():
        program.save(str(path), external_data=False)


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    # Into memory, not to a path: given a path, a model above 2 GB would be written as external
    # data files next to it; given a buffer it cannot, so the export is always one file.
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, input_names=["images"], output_names=["output"],
            dynamic_axes={"images": axes, "output": axes}, opset_version=min(opset, 17),
        )
    with _writing():
        path.write_bytes(buffer.getvalue())


def export_onnx(
    model: nn.Module,
    path: PathLike,
    *,
    example_size: Tuple[int, int] = (384, 384),
    input_type: str = "float",
    sigmoid: bool = False,
    exporter: str = "auto",
    opset: int = 18,
) -> ExportResult:
    """Export ``model`` to ONNX with dynamic batch/height/width and normalisation inside.

    The file is written through :func:`staged_onnx`: a failed or interrupted export leaves an
    existing ``path`` untouched. It is one self-contained file (weights inside, no external data).

    Args:
        model: the network (eval mode; moved to CPU for export).
        path: the ``.onnx`` file to write.
        example_size: ``(height, width)`` of the tracing example (multiples of 32).
        input_type: ``float`` or ``uint8`` (see the module docstring).
        sigmoid: output probabilities instead of logits.
        exporter: ``auto`` (dynamo, falling back to TorchScript), ``dynamo`` or ``torchscript``.
        opset: ONNX opset for the dynamo exporter (TorchScript uses at most 17); see
            :func:`supported_opsets`. The dynamo exporter (``auto``, ``dynamo``) writes no
            opset below :func:`dynamo_min_opset`.

    Raises:
        ValueError: an unknown exporter or input type, an opset outside :func:`supported_opsets`,
            or one below :func:`dynamo_min_opset` for the ``auto`` or ``dynamo`` exporter.
        RuntimeError: every exporter asked for failed (the message carries each reason).
        engine.files.FileWriteError: the file could not be written (full disk, quota, I/O error:
            :class:`~engine.files.DiskFullError` for the first two); the message names ``path``,
            which is left as it was. Never a reason to try the other exporter.
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter={exporter!r}: use auto, dynamo or torchscript.")
    low, high = supported_opsets()
    if not low <= opset <= high:
        raise ValueError(f"opset={opset}: the installed torch.onnx exports opsets {low} to {high}.")
    if exporter != "torchscript" and opset < dynamo_min_opset():
        # torch would quietly write dynamo_min_opset() instead (see there); auto would too, as
        # the dynamo exporter does not fail on it and so never falls back.
        raise ValueError(f"opset={opset}: the dynamo exporter (exporter={exporter!r}) writes opset "
                         f"{dynamo_min_opset()} or newer; use exporter='torchscript' for opset {opset}.")
    path = Path(path)
    module = NormalizedModel(model.cpu().eval(), input_type, sigmoid).eval()
    h, w = example_size
    example = sample_inputs(2, (h, w), input_type, seed=0)
    import onnx

    try:
        with staged_onnx(path) as tmp:
            used, reason = _run_exporters(module, example, tmp, exporter, opset)
            proto = onnx.load(str(tmp), load_external_data=False)
    except _WriteFailed as exc:  # named after path, not the temporary file it hit
        raise write_error(path, exc.error) from exc.error
    file_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    return ExportResult(path=path, exporter=used, attention=attention_backends_of(model), opset=int(file_opset),
                        fallback_reason=reason if used == "torchscript" and exporter == "auto" else None)


def _run_exporters(module: nn.Module, example: torch.Tensor, tmp: Path, exporter: str,
                   opset: int) -> Tuple[str, Optional[str]]:
    """Export ``module`` into ``tmp`` with the exporter(s) asked for (``auto``: dynamo, then TorchScript).

    Returns:
        The exporter that wrote ``tmp`` and why the dynamo exporter failed (None when it did not).

    Raises:
        RuntimeError: every exporter asked for failed.
        _WriteFailed: writing ``tmp`` failed; the disk's fault, so the other exporter is not tried.
    """
    reason = None
    if exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(module, example, tmp, opset)
            return "dynamo", None
        except _WriteFailed:
            raise
        except Exception as exc:  # noqa: BLE001 -- any exporter failure falls back or is reported
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            if exporter == "dynamo":
                raise RuntimeError(
                    f"torch.onnx.export(dynamo=True) failed: {reason}. Try exporter='torchscript'."
                ) from exc
    try:
        _export_torchscript(module, example, tmp, opset)
    except _WriteFailed:
        raise
    except Exception as exc:  # noqa: BLE001
        if exporter == "torchscript":
            raise RuntimeError(f"torch.onnx.export(dynamo=False) failed: {exc}.") from exc
        raise RuntimeError(f"ONNX export failed with both exporters (dynamo: {reason}; torchscript: {exc}).") from exc
    return "torchscript", reason


def sample_inputs(batch: int, size: Tuple[int, int], input_type: str = "float", seed: int = 0,
                  images: Optional[Sequence[np.ndarray]] = None) -> torch.Tensor:
    """Verification inputs: given RGB images resized to ``size``, else smooth textured scenes.

    Random per-pixel noise is a poor test of a vision model (every map is near-constant), so
    without images this draws blurred colour noise with a brighter blob, like the synthetic
    camouflage scenes.

    Returns:
        ``(batch, 3, H, W)`` float32 in [0, 1], or uint8 in [0, 255] for ``input_type="uint8"``.
    """
    import cv2

    h, w = size
    rng = np.random.default_rng(seed)
    out = []
    for i in range(batch):
        if images:
            im = cv2.resize(images[i % len(images)], (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            noise = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            im = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(1.0, min(h, w) / 40))
            im = cv2.normalize(im, None, 30, 200, cv2.NORM_MINMAX)
            center = (int(rng.integers(w // 4, 3 * w // 4 + 1)), int(rng.integers(h // 4, 3 * h // 4 + 1)))
            cv2.ellipse(im, center, (max(2, w // 6), max(2, h // 8)), float(rng.integers(0, 180)), 0, 360,
                        tuple(int(v) for v in rng.integers(120, 255, 3)), -1)
        out.append(im)
    array = np.stack(out).transpose(0, 3, 1, 2)  # (B, 3, H, W)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor if input_type == "uint8" else tensor.float() / 255.0


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_onnx(
    model: nn.Module,
    result: ExportResult,
    input_type: str = "float",
    sigmoid: bool = False,
    shapes: Sequence[Tuple[int, int, int]] = ((1, 384, 384), (3, 320, 448)),
    images: Optional[Sequence[np.ndarray]] = None,
) -> List[ExportCheck]:
    """Run the exported file with onnxruntime and compare with PyTorch on the same inputs.

    Args:
        model: the network that was exported.
        result: what :func:`export_onnx` returned; its ``checks`` are filled in.
        input_type, sigmoid: as exported.
        shapes: ``(batch, height, width)`` to check (different ones exercise the dynamic axes).
        images: RGB uint8 images to feed (resized); None draws textured scenes.

    Returns:
        One :class:`ExportCheck` per shape (fp32, CPU).
    """
    session = _session(result.path)
    module = NormalizedModel(model.cpu().eval(), input_type, sigmoid).eval()
    checks = []
    for i, (b, h, w) in enumerate(shapes):
        x = sample_inputs(b, (h, w), input_type, seed=100 + i, images=images)
        ref = module(x).numpy()
        (got,) = session.run(["output"], {"images": x.numpy()})
        if got.shape != ref.shape:
            raise RuntimeError(f"{result.path}: onnxruntime returned shape {got.shape} for input "
                               f"{tuple(x.shape)}, PyTorch {ref.shape}.")
        checks.append(ExportCheck(tuple(x.shape), float(np.abs(got - ref).max())))
    result.checks = checks
    return checks


def compare_attention_exports(model: nn.Module, folder: PathLike, size: Tuple[int, int] = (128, 128),
                              exporter: str = "auto") -> Dict[str, float]:
    """Export the model once with SDPA and once with explicit math attention; compare outputs.

    The model's own backend setting is restored afterwards.

    Returns:
        ``{"sdpa_vs_math": d1, "sdpa_vs_torch": d2, "math_vs_torch": d3}``: max absolute
        differences of the two ONNX files' outputs on the same inputs, and of each against
        PyTorch.
    """
    folder = Path(folder)
    before = {m: m.attn_backend for m in model.modules() if hasattr(m, "attn_backend")}
    outputs = {}
    x = sample_inputs(2, size, seed=7)
    try:
        with torch.no_grad():
            ref = NormalizedModel(model.cpu().eval()).eval()(x).numpy()
        for backend, name in (("auto", "sdpa"), ("math", "math")):
            set_attention_backend(model, backend)
            result = export_onnx(model, folder / f"{name}.onnx", example_size=size, exporter=exporter)
            (outputs[name],) = _session(result.path).run(["output"], {"images": x.numpy()})
    finally:
        for m, backend in before.items():
            m.attn_backend = backend
    return {
        "sdpa_vs_math": float(np.abs(outputs["sdpa"] - outputs["math"]).max()),
        "sdpa_vs_torch": float(np.abs(outputs["sdpa"] - ref).max()),
        "math_vs_torch": float(np.abs(outputs["math"] - ref).max()),
    }
