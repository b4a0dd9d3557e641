"""Quality-benchmark results: means and spread over seeds, seeds won against a reference, and
results of several calls merged into one table.

Between two runs of the same variant and seed the scores move (atomic adds in the backward make
training on a GPU non-deterministic): a difference between two variants means little unless it
holds across seeds. So next to each variant's mean the report gives the standard deviation over
seeds and, against a reference variant (the plain FPN by default), in how many seeds the variant
was ahead on each measure, comparing the two runs of the same seed (same call, same data).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "QUALITY_MEASURES",
    "ResultFileError",
    "VARIANT_NAMES",
    "ahead_of_reference",
    "format_quality_table",
    "load_result",
    "merge_results",
    "summarise_runs",
    "with_summary",
]

#: The four measures the benchmark reports (keys of :meth:`CODMetrics.compute`).
QUALITY_MEASURES = ("Sm", "Em_mean", "wFm", "MAE")

#: The quality-benchmark's variants, in the order ``--help`` lists them. Their model-config
#: overrides are :data:`benchmarks.quality.VARIANTS`, which checks that it names the same ones;
#: the names are kept here too because the command line reads them without importing torch.
VARIANT_NAMES = ("camoxpert", "fpn", "no-attention", "no-moe", "image-routing", "no-deep-supervision", "fpn-moe")

#: Measures where a lower value is better; higher is better for the others.
LOWER_IS_BETTER = frozenset({"MAE"})

#: The two comparison points of every run.
POINTS = ("equal_time", "equal_steps")

# What must match for runs of different files to share one table.
_SAME_IN_EVERY_FILE = ("data", "train_images", "test_images", "img_size", "model", "settings")


# What the report reads of a file, with the JSON types it accepts, so that a damaged or foreign
# file is refused naming the field rather than failing later with a KeyError or TypeError.
_NUMBER = (int, float)
_RESULT_FIELDS = {"model": (dict,), "settings": (dict,)}
_SETTINGS_FIELDS = {"seconds": _NUMBER, "batch_size": (int,), "dtype": (str,)}
_RUN_FIELDS = {
    "variant": (str,), "seed": (int,), "steps": _NUMBER, "img_per_s": _NUMBER, "params_m": _NUMBER,
    "moe_params_m": _NUMBER, "min_routing_share": (*_NUMBER, type(None)),
    "equal_time": (dict, type(None)), "equal_steps": (dict, type(None)),
}
_SCORE_FIELDS = {k: (*_NUMBER, type(None)) for k in QUALITY_MEASURES}
_GIVE_FILE = "Give the file that `quality-benchmark --json` wrote."
_JSON_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
                    bool: "true or false", type(None): "null"}


class ResultFileError(ValueError):
    """A result file that cannot be read, or that does not fit with the others."""


def _check_fields(value: Any, fields: Mapping[str, tuple], where: str, required: bool = True) -> None:
    """Raise :class:`ResultFileError` naming ``where`` and the field unless ``value`` is an object
    whose ``fields`` each hold one of their types (absent ones are allowed unless ``required``)."""
    if not isinstance(value, dict):
        raise ResultFileError(f"{where} is {_JSON_TYPE_NAMES[type(value)]}, not an object. {_GIVE_FILE}")
    for key, types in fields.items():
        if key not in value:
            if required:
                raise ResultFileError(f"{where} has no {key!r}. {_GIVE_FILE}")
            continue
        # JSON true/false load as bool, a subclass of int: never a valid count or score here.
        if isinstance(value[key], bool) or not isinstance(value[key], types):
            expected = " or ".join(_JSON_TYPE_NAMES[t] for t in types if not (t is int and float in types))
            raise ResultFileError(f"{where}: {key!r} is {json.dumps(value[key])[:60]}, expected {expected}. "
                                  f"{_GIVE_FILE}")


def _values(values: Sequence[Optional[float]]) -> List[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = _values(values)
    return statistics.fmean(vals) if vals else None


def _sd(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = _values(values)
    return statistics.stdev(vals) if len(vals) > 1 else None


def _point(run: Mapping[str, Any], point: str, measure: str) -> Optional[float]:
    scores = run.get(point)
    return scores.get(measure) if scores else None


def summarise_runs(runs: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Per variant: mean speed and steps, and mean and sample standard deviation over seeds of
    each measure at equal time and at equal steps (sd is None with fewer than 2 seeds)."""
    summary = {}
    for name in variants:
        rs = [r for r in runs if r["variant"] == name]
        entry: Dict[str, Any] = {
            "seeds": len(rs),
            "img_per_s": _mean([r["img_per_s"] for r in rs]),
            "steps": _mean([r["steps"] for r in rs]),
        }
        for point in POINTS:
            entry[point] = {k: _mean([_point(r, point, k) for r in rs]) for k in QUALITY_MEASURES}
            entry[f"{point}_sd"] = {k: _sd([_point(r, point, k) for r in rs]) for k in QUALITY_MEASURES}
        entry["min_routing_share"] = _mean([r["min_routing_share"] for r in rs])
        entry["params_m"] = rs[0]["params_m"] if rs else None
        entry["moe_params_m"] = rs[0]["moe_params_m"] if rs else None
        summary[name] = entry
    return summary


def _is_ahead(value: float, reference: float, measure: str) -> bool:
    return value < reference if measure in LOWER_IS_BETTER else value > reference


def ahead_of_reference(
    runs: Sequence[Mapping[str, Any]], variants: Sequence[str], reference: str
) -> Dict[str, Dict[str, Dict[str, List[int]]]]:
    """In how many seeds each variant beat ``reference``, per comparison point and measure.

    Each seed's run is compared with the reference's run of the same seed; seeds where either is
    missing or unscored are left out.

    Returns:
        ``{variant: {point: {measure: [seeds ahead, seeds compared]}}}`` for every variant but
        the reference; empty when no run of ``reference`` exists.
    """
    ref_runs = {r["seed"]: r for r in runs if r["variant"] == reference}
    if not ref_runs:
        return {}
    out: Dict[str, Dict[str, Dict[str, List[int]]]] = {}
    for name in variants:
        if name == reference:
            continue
        out[name] = {}
        for point in POINTS:
            counts = {}
            for k in QUALITY_MEASURES:
                # The reference at the same point: its own equal-steps score was taken at the
                # step count this seed's first variant reached, as this run's was.
                pairs = [(_point(r, point, k), _point(ref_runs[r["seed"]], point, k))
                         for r in runs if r["variant"] == name and r["seed"] in ref_runs]
                pairs = [(v, ref) for v, ref in pairs if v is not None and ref is not None]
                counts[k] = [sum(_is_ahead(v, ref, k) for v, ref in pairs), len(pairs)]
            out[name][point] = counts
    return out


def load_result(path: str) -> Dict[str, Any]:
    """Read one ``quality-benchmark --json`` file.

    Raises:
        ResultFileError: the file is missing, is not JSON, or is not a quality-benchmark result:
            a field the report reads is missing or of another type (the message names the file,
            the run's index and the field).
    """
    p = Path(path)
    try:
        result = json.loads(p.read_text())
    except OSError as exc:
        raise ResultFileError(f"{p}: cannot read it ({exc.strerror or exc}).") from exc
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{p}: not JSON ({exc.msg} at line {exc.lineno}). {_GIVE_FILE}") from exc
    if not isinstance(result, dict) or not isinstance(result.get("runs"), list) or "settings" not in result:
        raise ResultFileError(f"{p}: not a quality-benchmark result (no 'runs' and 'settings'). {_GIVE_FILE}")
    _check_fields(result, _RESULT_FIELDS, str(p))
    _check_fields(result["settings"], _SETTINGS_FIELDS, f"{p}: 'settings'")
    for i, run in enumerate(result["runs"]):
        _check_fields(run, _RUN_FIELDS, f"{p}: run {i}")
        for point in POINTS:
            if run[point] is not None:
                _check_fields(run[point], _SCORE_FIELDS, f"{p}: run {i} {point!r}", required=False)
    return result


def merge_results(results: Sequence[Tuple[str, Mapping[str, Any]]], reference: str = "fpn") -> Dict[str, Any]:
    """Merge results of several calls (for example one seed per call) into one result.

    Args:
        results: ``(file name, result)`` pairs, as :func:`load_result` reads them.
        reference: the variant every other is compared with, seed by seed.

    Raises:
        ResultFileError: the files were run on different data, model, or settings (the message
            names the file and the field), or two of them hold the same variant and seed.
    """
    if not results:
        raise ResultFileError("No result files given.")
    first_name, first = results[0]
    runs: List[Dict[str, Any]] = []
    seen: Dict[Tuple[str, int], str] = {}
    variants: List[str] = []
    for name, result in results:
        for key in _SAME_IN_EVERY_FILE:
            if result.get(key) != first.get(key):
                raise ResultFileError(
                    f"{name}: its {key!r} differs from {first_name}'s; only runs of the same data, model and "
                    f"settings share a table. Merge files of one command line, differing only in --seeds.")
        for run in result["runs"]:
            key = (run["variant"], run["seed"])
            if key in seen:
                raise ResultFileError(f"{name}: variant {run['variant']!r} seed {run['seed']} is also in {seen[key]}. "
                                      f"Give each seed's run once.")
            seen[key] = name
            runs.append(dict(run))
            if run["variant"] not in variants:
                variants.append(run["variant"])
    gpus = sorted({r.get("gpu") or r.get("device") for _, r in results})
    merged = {k: first.get(k) for k in _SAME_IN_EVERY_FILE}
    merged.update({
        "device": first.get("device"),
        "gpu": ", ".join(str(g) for g in gpus),
        "torch": first.get("torch"),
        "date": ", ".join(sorted({str(r.get("date")) for _, r in results})),
        "variants": variants,
        "seeds": sorted({r["seed"] for r in runs}),
        "merged_from": [name for name, _ in results],
        "runs": runs,
    })
    return with_summary(merged, reference)


def with_summary(result: Dict[str, Any], reference: str = "fpn") -> Dict[str, Any]:
    """``result`` with its ``summary``, ``reference`` and ``ahead_of_reference`` entries (re)computed."""
    result["summary"] = summarise_runs(result["runs"], result["variants"])
    ahead = ahead_of_reference(result["runs"], result["variants"], reference)
    result["reference"] = reference if ahead else None
    result["ahead_of_reference"] = ahead
    return result


def _f(v: Optional[float], spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def format_quality_table(result: Mapping[str, Any]) -> str:
    """The per-variant means over seeds as a text table (higher is better except MAE), with the
    spread over seeds and the seeds won against the reference when there are any."""
    s = result["settings"]
    where = result["gpu"] or result["device"]
    lines = [
        f"Learning quality on {where}: {result['model'].get('backbone')}, {result['img_size']}px, batch "
        f"{s['batch_size']}, {s['dtype']}, {s['seconds']:g} s per run, seeds {result['seeds']}, data {result['data']}",
        f"{'variant':<20}{'img/s':>8}{'steps':>8}{'S':>8}{'mean E':>8}{'wF':>8}{'MAE':>8}   at equal steps: "
        f"{'S':>7}{'mean E':>8}{'wF':>8}{'MAE':>8}{'min route':>11}",
    ]

    def scores(values: Mapping[str, Optional[float]]) -> Tuple[str, str]:
        return ("".join(f"{_f(values[k]):>8}" for k in QUALITY_MEASURES),
                "".join(f"{_f(values[k]):>{7 if i == 0 else 8}}" for i, k in enumerate(QUALITY_MEASURES)))

    several_seeds = len(result["seeds"]) > 1
    for name, m in result["summary"].items():
        t, q = scores(m["equal_time"])[0], scores(m["equal_steps"])[1]
        lines.append(f"{name:<20}{_f(m['img_per_s'], '.1f'):>8}{_f(m['steps'], '.0f'):>8}{t}   {' ' * 16}{q}"
                     f"{_f(m['min_routing_share'], '.3f'):>11}")
        if several_seeds and "equal_time_sd" in m:
            t, q = scores(m["equal_time_sd"])[0], scores(m["equal_steps_sd"])[1]
            lines.append(f"{'  sd over seeds':<36}{t}   {' ' * 16}{q}")
    ahead = result.get("ahead_of_reference") or {}
    if ahead:
        lines.append(f"seeds ahead of {result['reference']} (same seed, same call):")
        for name, points in ahead.items():
            parts = [f"{point.replace('_', ' ')}: " + " ".join(
                f"{label} {n}/{total}" for label, (n, total) in zip(("S", "E", "wF", "MAE"),
                                                                    (points[point][k] for k in QUALITY_MEASURES)))
                for point in POINTS]
            lines.append(f"  {name:<18}" + "  |  ".join(parts))
    return "\n".join(lines)
