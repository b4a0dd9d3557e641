"""Learning-quality benchmark: model variants trained from scratch for the same GPU seconds.

A detector is judged by the masks it learns to draw, so every change to the model is measured
here by quality per GPU second, side by side with a reference in the same run. Each variant is
built through the normal model config (the run config's ``model`` section plus the variant's
overrides), trained by one bare loop around the product's training step
(:func:`benchmarks.preloaded.train_preloaded`: data preloaded on the device, horizontal flips only,
the project's structure loss, AdamW at a constant learning rate after a linear warm-up), then
scored on the test split with PySODMetrics at ground-truth size.

Two comparisons per seed:

* **equal time**: every variant trains for ``seconds`` of measured device time;
* **equal steps**: every variant is also scored at the number of steps the *first* variant
  reached in its time budget, or at ``equal_steps`` when given (its weights are copied when it
  passes that step; with a constant learning rate this equals a run stopped there). List the
  slowest variant first.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm

from benchmarks.preloaded import QualitySettings, normalise, train_preloaded, use_cuda_graph
from benchmarks.quality_data import QualityData
from benchmarks.quality_report import QUALITY_MEASURES, VARIANT_NAMES, format_quality_table, with_summary
from engine.evaluation.metrics import CODMetrics
from engine.inference.postprocess import resize_prediction
from engine.runtime import autocast_context
from engine.training.losses import CODLoss
from engine.training.rng import seed_everything
from models import CamoXpertConfig, build_model, count_parameters

__all__ = [
    "QUALITY_MEASURES",
    "VARIANTS",
    "QualityPlan",
    "QualitySettings",
    "format_quality_table",
    "run_quality_benchmark",
    "score_model",
    "structure_loss",
    "train_preloaded",
    "use_cuda_graph",
    "variant_config",
]

_ALL_EXPERTS = list(CamoXpertConfig().experts)

#: Model-config overrides of each variant, applied over the run config's ``model`` section.
VARIANTS: Dict[str, Dict[str, Any]] = {
    # The model as configured (configs/default.yaml, --config, --set).
    "camoxpert": {},
    # Plain FPN on the same backbone: 1x1 laterals, top-down sum, 3x3 conv head; no MoE.
    "fpn": {"num_experts": 0, "decoder": "fpn", "deep_supervision": False},
    # The six other experts, no attention expert.
    "no-attention": {"experts": [e for e in _ALL_EXPERTS if e != "attention"], "num_experts": 6},
    # The refinement decoder and deep supervision without any expert.
    "no-moe": {"num_experts": 0},
    # One routing choice per image instead of per token.
    "image-routing": {"routing": "image"},
    # Without the deep-supervision side outputs.
    "no-deep-supervision": {"deep_supervision": False},
    # The experts on the plain FPN decoder (top-down sums, no refining convs).
    "fpn-moe": {"decoder": "fpn"},
}
# `quality-benchmark --help` lists VARIANT_NAMES, which it reads without importing torch: a variant
# added to one table only fails here, at import, instead of going missing from the help or the CLI.
if tuple(VARIANTS) != VARIANT_NAMES:
    raise RuntimeError(f"VARIANTS {list(VARIANTS)} and quality_report.VARIANT_NAMES {list(VARIANT_NAMES)} differ.")

def structure_loss(loss_section: Optional[Mapping[str, Any]] = None) -> CODLoss:
    """The training loss of a run config's ``loss`` section (its other keys are not the loss's)."""
    keys = ("side_weight", "aux_weight", "edge_kernel", "edge_weight")
    return CODLoss(**{k: v for k, v in dict(loss_section or {}).items() if k in keys})


def variant_config(model_section: Mapping[str, Any], name: str) -> CamoXpertConfig:
    """The model config of variant ``name``: the run's ``model`` section plus its overrides.

    Raises:
        ValueError: unknown variant (the message lists the valid ones).
    """
    if name not in VARIANTS:
        raise ValueError(f"Unknown variant {name!r}. Valid variants: {', '.join(VARIANTS)}.")
    return CamoXpertConfig.from_dict({**dict(model_section), **VARIANTS[name]})


@torch.no_grad()
def score_model(model: torch.nn.Module, data: QualityData, settings: QualitySettings) -> Dict[str, float]:
    """S-measure, mean E-measure, weighted F and MAE of ``model`` on the test split.

    Probabilities are resized to each mask's own size and quantised to uint8, as evaluation
    toolkits do, then scored by PySODMetrics.
    """
    device = data.test_images.device
    model.eval()
    metrics = CODMetrics(measures=("Sm", "Em", "wFm", "MAE"))
    for start in range(0, data.test_images.shape[0], settings.eval_batch_size):
        channels_last = settings.channels_last and device.type == "cuda"
        images = normalise(data.test_images[start : start + settings.eval_batch_size], channels_last)
        with autocast_context(device, settings.dtype):
            probs = model(images).float().sigmoid()[:, 0].cpu()  # (b, S, S)
        for i, prob in enumerate(probs):
            gt = data.test_gts[start + i]
            metrics.update(resize_prediction(prob, gt.shape[:2]), gt)
    result = metrics.compute()
    model.train()
    return {k: float(result[k]) for k in QUALITY_MEASURES}


@contextmanager
def _run_progress(settings: QualitySettings, desc: str) -> Iterator[Callable[[int, float], None]]:
    """A tqdm bar over one run's budget, as :func:`train_preloaded`'s ``progress`` callback: device
    seconds against ``settings.seconds``, or steps against ``settings.max_steps`` without a time
    limit. It moves only at the loop's clock reads; tqdm itself honours ``TQDM_DISABLE``."""
    by_time = settings.seconds > 0
    # tqdm's own rate column would read "s/s" for a bar of seconds: show the steps taken instead.
    style = {"bar_format": "{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}"} if by_time else {"unit": "step"}
    bar = tqdm(total=settings.seconds if by_time else settings.max_steps, desc=desc, leave=False,
               mininterval=1.0, dynamic_ncols=True, **style)

    def show(steps: int, seconds: float) -> None:
        if by_time:
            bar.set_postfix_str(f"{steps} steps", refresh=False)
        bar.update(min(seconds if by_time else steps, bar.total) - bar.n)

    try:
        yield show
    finally:
        bar.close()


@dataclass
class QualityPlan:
    """Which runs a quality benchmark makes.

    Attributes:
        model_section: the run config's ``model`` section (backbone, width...).
        variants: names from :data:`VARIANTS`, slowest first.
        seeds: one full round of variants per seed.
        loss_section: the run config's ``loss`` section (structure-loss and balance weights).
        equal_steps: the step count every variant is also scored at (default: the first
            variant's steps in each seed), e.g. to compare with a variant run in another call.
        reference: the variant every other is compared with, seed by seed (see
            :mod:`benchmarks.quality_report`).
    """

    model_section: Mapping[str, Any]
    variants: Sequence[str]
    seeds: Sequence[int]
    loss_section: Optional[Mapping[str, Any]] = None
    equal_steps: Optional[int] = None
    reference: str = "fpn"


def run_quality_benchmark(data: QualityData, plan: QualityPlan, settings: QualitySettings,
                          log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train and score every variant for every seed; the first variant sets the equal-steps point.

    Args:
        data: the preloaded splits (see :func:`benchmarks.quality_data.load_quality_data`).
        plan: the variants, seeds and config sections.
        settings: the shared loop settings.
        log: where the line of each finished run goes (a tqdm bar shows each run while it trains).

    Returns:
        A JSON-safe dict: settings, per-run records, per-variant means and spread over seeds, and
        the seeds each variant won against ``plan.reference``.
    """
    configs = {name: variant_config(plan.model_section, name) for name in plan.variants}  # fail early
    device = data.train_images.device
    runs: List[Dict[str, Any]] = []
    for seed in plan.seeds:
        target = plan.equal_steps
        for name in plan.variants:
            run = _train_and_score(data, name, configs[name], settings, structure_loss(plan.loss_section), seed,
                                   target)
            run = {"variant": name, "seed": seed, **run}
            target = run["equal_steps_at"]
            runs.append(run)
            final, at_steps = run["equal_time"], run["equal_steps"]
            log(
                f"seed {seed} {name:<20} {run['steps']:>6} steps {run['img_per_s']:>7.1f} img/s  "
                f"S {final['Sm']:.4f}  E {final['Em_mean']:.4f}  wF {final['wFm']:.4f}  MAE {final['MAE']:.4f}"
                + (f"  | at {target} steps S {at_steps['Sm']:.4f}" if at_steps else "")
            )
    result = {
        "data": data.name,
        "train_images": int(data.train_images.shape[0]),
        "test_images": int(data.test_images.shape[0]),
        "img_size": int(data.train_images.shape[-1]),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "model": dict(plan.model_section),
        "settings": settings.to_dict(),
        "variants": list(plan.variants),
        "seeds": list(plan.seeds),
        "runs": runs,
    }
    return with_summary(result, plan.reference)


def _train_and_score(data: QualityData, name: str, config: CamoXpertConfig, settings: QualitySettings,
                     loss_fn: CODLoss, seed: int, target: Optional[int]) -> Dict[str, Any]:
    """One variant and seed: build, train, score at equal time and at ``target`` steps (None: its own)."""
    device = data.train_images.device
    seed_everything(seed)
    model = build_model(config).to(device)
    with _run_progress(settings, f"seed {seed} {name}") as progress:
        record = train_preloaded(model, data, settings, loss_fn, seed, snapshot_at=target, progress=progress)
    if target is None:
        target = record.steps
    final = score_model(model, data, settings)
    at_steps = None
    if record.steps == target:
        at_steps = final
    elif record.snapshot is not None:
        model.load_state_dict(record.snapshot)
        at_steps = score_model(model, data, settings)
    run = {
        "params_m": round(count_parameters(model) / 1e6, 3),
        "moe_params_m": round(sum(p.numel() for p in model.moe.parameters()) / 1e6, 3),
        "steps": record.steps,
        "train_seconds": round(record.seconds, 2),
        "img_per_s": round(record.steps * settings.batch_size / max(record.seconds, 1e-9), 1),
        "cuda_graph": record.cuda_graph,
        "setup_seconds": round(record.setup_seconds, 2),
        "final_loss": round(record.final_loss, 4),
        "equal_time": final,
        "equal_steps": at_steps,
        "equal_steps_at": target,
        "routing": record.routing,
        "min_routing_share": min((s for layer in record.routing.values() for s in layer.values()), default=None),
    }
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return run
