"""The ``README.md`` model card of a pretrained folder: YAML front matter the Hugging Face Hub reads
(``license``, ``library_name``, ``tags``, ``datasets``), then what the model is, what it was trained
on and how, its scores with each metric's variant named, and how to use it.

Scores come from the checkpoint's own record: the validation pass of training, on images held
out of the training set, never a test set. ``evaluate`` results (its ``--output-json``) can be
added; they are listed per test set under their own heading.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import yaml

__all__ = ["METRIC_NAMES", "model_card"]

#: Score keys (as ``evaluate`` and the validation record write them) and the names papers use.
METRIC_NAMES: Tuple[Tuple[str, str], ...] = (
    ("Sm", "S-measure (S_alpha, alpha = 0.5)"),
    ("Em_mean", "mean E-measure"),
    ("Em_max", "max E-measure"),
    ("Em_adp", "adaptive E-measure"),
    ("wFm", "weighted F-measure (F^w_beta)"),
    ("Fm_mean", "mean F-measure"),
    ("Fm_max", "max F-measure"),
    ("Fm_adp", "adaptive F-measure"),
    ("MAE", "MAE (mean absolute error, lower is better)"),
)
_BASE_TAGS = ["camouflaged-object-detection", "image-segmentation", "binary-segmentation", "mixture-of-experts",
              "pytorch", "safetensors"]


def _dataset_names(run_config: Mapping[str, Any]) -> List[str]:
    """The data sets a run trained on, by folder name (full paths stay private to the machine)."""
    data = run_config.get("data") or {}
    paths = data.get("dataset_paths") or []
    names = [os.path.basename(os.path.normpath(str(p))) for p in paths]
    return [n for n in dict.fromkeys(names) if n] or ["camoxpert-synthetic"]


def _front_matter(config: Mapping[str, Any], datasets: List[str], license: str) -> str:
    backbone = str(config["model"].get("backbone", ""))
    meta = {
        "license": license,
        "library_name": "camoxpert",
        "pipeline_tag": "image-segmentation",
        "tags": _BASE_TAGS + ([backbone.split("_")[0], backbone] if backbone else []),
        "datasets": datasets,
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _fmt(value: Any) -> Optional[str]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.4f}"
    return None


def _score_rows(scores: Mapping[str, Any], prefix: str = "") -> List[str]:
    """Table rows ``| metric | value |`` for the known keys ``scores`` holds."""
    rows = []
    for key, label in METRIC_NAMES:
        text = _fmt(scores.get(prefix + key))
        if text is not None:
            rows.append(f"| {label} | {text} |")
    return rows


def _validation_section(ckpt: Mapping[str, Any], config: Mapping[str, Any]) -> List[str]:
    record = ckpt.get("metrics") or {}
    rows = _score_rows(record, "val_")
    data = (ckpt.get("config") or {}).get("data") or {}
    fraction = data.get("val_fraction")
    held = f"{fraction:.0%} of the training images" if isinstance(fraction, (int, float)) else "training images"
    lines = ["## Scores", ""]
    if not rows:
        return lines + ["The checkpoint records no validation scores. Measure them with `evaluate` (below).", ""]
    n = record.get("val_n")
    return lines + [
        f"Measured during training on the **validation split**: {n if n else 'the'} images held out of the training "
        f"set ({held}), at step {config.get('step')}. This is the split that picked these weights, not a test set; "
        f"test-set scores come from `python train_ultimate.py evaluate` (below).",
        "", "| metric | validation |", "|---|---|", *rows, "",
    ]


def _evaluate_section(scores: Optional[Mapping[str, Any]]) -> List[str]:
    """Test-set scores from ``evaluate --output-json`` (``{"<set>": {"Sm": ..., ...}}``)."""
    if not scores:
        return []
    sets = [(name, s) for name, s in scores.items() if isinstance(s, Mapping) and _score_rows(s)]
    if not sets:
        return []
    labels = [label for key, label in METRIC_NAMES if any(_fmt(s.get(key)) for _, s in sets)]
    keys = [key for key, label in METRIC_NAMES if label in labels]
    lines = ["### Test sets (`evaluate`)", "", "| test set | n | " + " | ".join(labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for name, s in sets:
        lines.append(f"| {name} | {s.get('n', '')} | " + " | ".join(_fmt(s.get(k)) or "" for k in keys) + " |")
    return lines + [""]


def _training_command(ckpt: Mapping[str, Any]) -> List[str]:
    command = ckpt.get("command")
    if isinstance(command, (list, tuple)):
        command = " ".join(str(c) for c in command)
    if isinstance(command, str) and command.strip():
        return ["```bash", command.strip(), "```"]
    # The run's resolved configuration reproduces it: every default and flag is in it.
    return ["```bash", "python train_ultimate.py train --config run_config.yaml  # the configuration below", "```"]


def _public_run_config(run_config: Mapping[str, Any]) -> Dict[str, Any]:
    """The run configuration with data set paths cut to folder names (paths are the trainer's machine's)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in run_config.items()}
    if isinstance(out.get("data"), dict) and out["data"].get("dataset_paths"):
        out["data"]["dataset_paths"] = _dataset_names(run_config)
    return out


def _lines(items: Iterable[Tuple[str, Any]]) -> List[str]:
    return [f"- {name}: {value}" for name, value in items if value not in (None, "")]


def _model_section(config: Mapping[str, Any]) -> List[str]:
    m = config["model"]
    experts = ", ".join((m.get("experts") or [])[:m.get("num_experts")])
    weights = "EMA of the training weights" if config.get("weights") == "ema" else "training weights"
    return [
        "## Model", "",
        *_lines([("backbone", m.get("backbone")), ("width", m.get("dim")), ("experts", experts),
                 ("routing", f"{m.get('routing')}, top-{m.get('top_k')} at levels {m.get('moe_levels')}"),
                 ("decoder", m.get("decoder")), ("weights", weights)]),
        "",
    ]


def _training_section(ckpt: Mapping[str, Any], config: Mapping[str, Any], datasets: List[str]) -> List[str]:
    h, w = config["input_size"]
    norm = config["normalization"]
    train = (ckpt.get("config") or {}).get("train") or {}
    return [
        "## Training", "",
        *_lines([("data sets", ", ".join(datasets)), ("image size", f"{h}x{w}"),
                 ("normalisation", f"RGB / {norm.get('max_pixel_value', 255.0):g}, mean {norm['mean']}, std {norm['std']}"),
                 ("steps", config.get("step")), ("epochs", config.get("epoch")), ("batch size", train.get("batch_size")),
                 ("learning rate", train.get("lr")), ("precision", train.get("precision"))]),
        "", "Trained with:", "", *_training_command(ckpt), "",
    ]


def _usage_section(repo_id: Optional[str]) -> List[str]:
    name = repo_id or "USER/NAME"
    lines = [
        "## Use", "",
        "```bash",
        f"python train_ultimate.py predict --model {name} --input photos/ --output masks/",
        f"python train_ultimate.py evaluate --model {name} --dataset-path COD10K-v3",
        "```", "",
        "```python",
        "from engine.sharing import from_pretrained",
        f'model = from_pretrained("{name}")  # or the path of this folder; eval mode',
        "```", "",
    ]
    return lines + ([] if repo_id else ["`USER/NAME` is this model's Hub id, or the path of this folder.", ""])


def model_card(ckpt: Mapping[str, Any], config: Mapping[str, Any], license: str = "mit",
               scores: Optional[Mapping[str, Any]] = None, repo_id: Optional[str] = None) -> str:
    """The ``README.md`` text for a checkpoint and its ``config.json`` content.

    Args:
        ckpt: the loaded checkpoint (its ``config``, ``metrics`` record and ``step`` are read).
        config: the ``config.json`` content (:func:`engine.sharing.pretrained.pretrained_config`).
        license: the license id for the front matter and the license section.
        scores: ``evaluate --output-json`` results to list per test set.
        repo_id: the Hub id the folder is published under, shown in the usage examples
            (``USER/NAME`` without one).
    """
    run_config = ckpt.get("config") or {}
    m = config["model"]
    datasets = _dataset_names(run_config)
    body = [
        f"# CamoXpert ({m.get('backbone')}, {m.get('num_experts')} experts, top-{m.get('top_k')})", "",
        "Camouflaged object detection: an EdgeNeXt backbone (timm), mixture-of-experts layers and a decoder that "
        "outputs one mask logit per pixel (apply a sigmoid for the probability that a pixel belongs to the "
        "camouflaged object).", "",
        *_model_section(config), *_training_section(ckpt, config, datasets),
        *_validation_section(ckpt, config), *_evaluate_section(scores), *_usage_section(repo_id),
    ]
    if run_config:
        body += ["<details><summary>Run configuration (run_config.yaml)</summary>", "", "```yaml",
                 yaml.safe_dump(_public_run_config(run_config), sort_keys=False).rstrip(), "```", "", "</details>", ""]
    body += ["## License", "", license, ""]
    return _front_matter(config, datasets, license) + "\n" + "\n".join(body)
