"""Quality-benchmark reports: spread over seeds, seeds won against the reference, merged calls."""
import json

import pytest
from click.testing import CliRunner

from benchmarks.quality_report import (
    ResultFileError,
    ahead_of_reference,
    format_quality_table,
    load_result,
    merge_results,
    summarise_runs,
)


def _run(variant, seed, s, mae, steps=100):
    scores = {"Sm": s, "Em_mean": s + 0.1, "wFm": s - 0.3, "MAE": mae}
    return {"variant": variant, "seed": seed, "params_m": 1.0, "moe_params_m": 0.0, "steps": steps,
            "img_per_s": 10.0 * steps, "equal_time": scores, "equal_steps": dict(scores),
            "equal_steps_at": 100, "routing": {}, "min_routing_share": None}


def _result(runs, seconds=240.0):
    return {"data": "synthetic 6/3 @64px", "train_images": 6, "test_images": 3, "img_size": 64,
            "device": "cpu", "gpu": None, "torch": "2", "date": "2026-11-24", "model": {"backbone": "edgenext_xx_small"},
            "settings": {"seconds": seconds, "batch_size": 2, "dtype": "fp32"},
            "variants": sorted({r["variant"] for r in runs}, reverse=True), "seeds": sorted({r["seed"] for r in runs}),
            "runs": runs}


def test_summary_gives_mean_and_sample_sd_over_seeds():
    runs = [_run("camoxpert", 0, 0.70, 0.06), _run("camoxpert", 1, 0.74, 0.04)]
    m = summarise_runs(runs, ["camoxpert"])["camoxpert"]
    assert m["seeds"] == 2
    assert m["equal_time"]["Sm"] == pytest.approx(0.72)
    assert m["equal_time_sd"]["Sm"] == pytest.approx(0.0282843, abs=1e-6)  # sample sd of 0.70, 0.74
    assert summarise_runs(runs[:1], ["camoxpert"])["camoxpert"]["equal_time_sd"]["Sm"] is None


def test_seeds_ahead_compare_each_seed_with_its_own_reference_run_and_mae_lower_is_better():
    runs = [_run("camoxpert", 0, 0.72, 0.050), _run("fpn", 0, 0.71, 0.055),  # ahead on both
            _run("camoxpert", 1, 0.70, 0.060), _run("fpn", 1, 0.74, 0.040),  # behind on both
            _run("camoxpert", 2, 0.73, 0.050)]  # no reference run of seed 2: not compared
    ahead = ahead_of_reference(runs, ["camoxpert", "fpn"], "fpn")
    assert set(ahead) == {"camoxpert"}
    assert ahead["camoxpert"]["equal_time"]["Sm"] == [1, 2]
    assert ahead["camoxpert"]["equal_time"]["MAE"] == [1, 2]
    assert ahead_of_reference(runs, ["camoxpert"], "no-attention") == {}


def test_quality_report_merges_calls_into_one_table_and_json(tmp_path):
    from benchmarks.lab import main

    a, b = tmp_path / "seed0.json", tmp_path / "seed1.json"
    a.write_text(json.dumps(_result([_run("camoxpert", 0, 0.72, 0.05), _run("fpn", 0, 0.71, 0.06)])))
    b.write_text(json.dumps(_result([_run("camoxpert", 1, 0.73, 0.05), _run("fpn", 1, 0.74, 0.04)])))
    out = tmp_path / "merged" / "all.json"
    res = CliRunner().invoke(main, ["quality-report", str(a), str(b), "--json", str(out)])
    assert res.exit_code == 0, res.output
    merged = json.loads(out.read_text())
    assert merged["seeds"] == [0, 1] and len(merged["runs"]) == 4
    assert merged["merged_from"] == [str(a), str(b)]
    assert merged["summary"]["camoxpert"]["equal_time"]["Sm"] == pytest.approx(0.725)
    assert merged["ahead_of_reference"]["camoxpert"]["equal_time"]["Sm"] == [1, 2]
    assert "sd over seeds" in res.output and "seeds ahead of fpn" in res.output
    assert "S 1/2" in format_quality_table(merged)


def test_merge_refuses_files_of_different_settings_naming_the_file():
    a = _result([_run("camoxpert", 0, 0.72, 0.05)])
    b = _result([_run("camoxpert", 1, 0.72, 0.05)], seconds=120.0)
    with pytest.raises(ResultFileError, match=r"b\.json: its 'settings' differs from a\.json"):
        merge_results([("a.json", a), ("b.json", b)])


def test_merge_refuses_the_same_seed_twice():
    a = _result([_run("camoxpert", 0, 0.72, 0.05)])
    with pytest.raises(ResultFileError, match=r"b\.json: variant 'camoxpert' seed 0 is also in a\.json"):
        merge_results([("a.json", a), ("b.json", a)])


def test_unreadable_or_foreign_result_file_gets_a_clear_error(tmp_path):
    from benchmarks.lab import main

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = CliRunner().invoke(main, ["quality-report", str(bad)])
    assert res.exit_code == 1 and "bad.json: not JSON" in res.output
    other = tmp_path / "metrics.json"
    other.write_text(json.dumps({"Sm": 0.7}))
    with pytest.raises(ResultFileError) as info:
        load_result(str(other))
    assert "metrics.json" in str(info.value) and "'runs'" in str(info.value)  # the file, and the key it lacks
    with pytest.raises(ResultFileError, match="missing.json: cannot read it"):
        load_result(str(tmp_path / "missing.json"))


def _edit(result, path, value):
    """``result`` with the entry at ``path`` (keys and list indices) set to ``value``."""
    result = json.loads(json.dumps(result))
    target = result
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return result


_GOOD = _result([_run("camoxpert", 0, 0.72, 0.05), _run("fpn", 1, 0.71, 0.06)])


@pytest.mark.parametrize("content, words", [
    ({"runs": [{}], "settings": {}}, ["has no 'model'"]),
    (_edit(_GOOD, ["runs"], [{}]), ["run 0 has no 'variant'"]),
    (_edit(_GOOD, ["runs"], [1]), ["run 0 is an integer, not an object"]),
    (_edit(_GOOD, ["model"], None), ["'model' is null, expected an object"]),
    (_edit(_GOOD, ["settings"], {}), ["'settings' has no 'seconds'"]),
    (_edit(_GOOD, ["runs", 1, "seed"], "1"), ["run 1: 'seed' is \"1\", expected an integer"]),
    (_edit(_GOOD, ["runs", 1, "steps"], True), ["run 1: 'steps' is true"]),
    (_edit(_GOOD, ["runs", 0, "equal_time"], [0.7]), ["run 0: 'equal_time' is [0.7], expected an object or null"]),
    (_edit(_GOOD, ["runs", 0, "equal_steps", "Sm"], "high"),
     ["run 0 'equal_steps': 'Sm' is \"high\", expected a number"]),
])
def test_malformed_result_file_is_refused_naming_the_file_run_and_field(tmp_path, content, words):
    from benchmarks.lab import main

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_GOOD))
    bad.write_text(json.dumps(content))
    res = CliRunner().invoke(main, ["quality-report", str(good), str(bad)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output  # a message, not a traceback
    assert f"{bad}" in res.output and "quality-benchmark --json" in res.output, res.output
    for word in words:
        assert word in res.output, (word, res.output)
    assert CliRunner().invoke(main, ["quality-report", str(good)]).exit_code == 0  # the unchanged file loads


def test_reference_must_be_a_variant_of_the_files(tmp_path):
    from benchmarks.lab import main

    a = tmp_path / "a.json"
    a.write_text(json.dumps(_result([_run("camoxpert", 0, 0.72, 0.05), _run("no-moe", 0, 0.71, 0.06)])))
    res = CliRunner().invoke(main, ["quality-report", str(a), "--reference", "nonsense"])
    assert res.exit_code == 2 and "--reference" in res.output and "camoxpert, no-moe" in res.output, res.output
    res = CliRunner().invoke(main, ["quality-report", str(a), "--reference", "no-moe"])
    assert res.exit_code == 0 and "seeds ahead of no-moe" in res.output, res.output
    # Left at its default (fpn), it only compares where the files hold fpn runs.
    res = CliRunner().invoke(main, ["quality-report", str(a)])
    assert res.exit_code == 0 and "seeds ahead" not in res.output, res.output
