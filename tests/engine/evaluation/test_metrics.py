"""engine.evaluation.metrics: scores equal PySODMetrics run directly; categories, cheap mode, partial sums."""
import numpy as np
import py_sod_metrics
import pytest
import torch

from engine.evaluation.metrics import CODMetrics, RESULT_KEYS, to_uint8_gt, to_uint8_pred
from engine.inference.postprocess import resize_prediction


def _pairs(n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 40 + 3 * i, 56 - 2 * i
        gt = np.zeros((h, w), np.uint8)
        if i != 2:  # one empty mask (a NonCAM-like image)
            gt[h // 4: h // 4 + 10 + i, w // 3: w // 3 + 12] = 255
        pred = np.clip(gt / 255.0 * 0.7 + rng.random((h, w)) * 0.4, 0, 1)
        out.append(((pred * 255).round().astype(np.uint8), gt))
    return out


def _reference(pairs):
    sm, em, wfm, mae = py_sod_metrics.Smeasure(), py_sod_metrics.Emeasure(), py_sod_metrics.WeightedFmeasure(), py_sod_metrics.MAE()
    fm = py_sod_metrics.FmeasureV2(
        metric_handlers={"fm": py_sod_metrics.FmeasureHandler(with_adaptive=True, with_dynamic=True, beta=0.3)}
    )
    for pred, gt in pairs:
        for m in (sm, em, wfm, mae, fm):
            m.step(pred=pred, gt=gt)
    e = em.get_results()["em"]
    f = fm.get_results()["fm"]
    return {
        "Sm": sm.get_results()["sm"], "Em_adp": e["adp"], "Em_mean": e["curve"].mean(), "Em_max": e["curve"].max(),
        "wFm": wfm.get_results()["wfm"], "Fm_adp": f["adaptive"], "Fm_mean": f["dynamic"].mean(),
        "Fm_max": f["dynamic"].max(), "MAE": mae.get_results()["mae"],
    }


def test_equals_pysodmetrics_directly():
    pairs = _pairs()
    metrics = CODMetrics()
    for pred, gt in pairs:
        metrics.update(pred, gt)
    res = metrics.compute()
    ref = _reference(pairs)
    assert set(RESULT_KEYS) | {"per_category"} == set(res)
    assert res["n"] == len(pairs)
    for key, value in ref.items():
        assert res[key] == pytest.approx(float(value), rel=1e-12, abs=1e-12), key
    assert res["per_category"] == {}


def test_float_pred_and_gt_inputs_match_uint8():
    pairs = _pairs(3, seed=1)
    a, b = CODMetrics(), CODMetrics()
    for pred, gt in pairs:
        a.update(pred, gt)
        b.update(torch.from_numpy(pred.astype(np.float32) / 255.0)[None], gt.astype(np.float32) / 255.0)
    ra, rb = a.compute(), b.compute()
    for key in RESULT_KEYS:
        assert ra[key] == pytest.approx(rb[key], rel=1e-12), key


def test_per_category_groups_equal_subset_runs():
    pairs = _pairs(6)
    cats = [("Aquatic", "Flounder"), ("Aquatic", "Crab"), ("Flying", "Owl"), None, "Aquatic/Flounder", ("Flying", "Owl")]
    metrics = CODMetrics()
    for (pred, gt), cat in zip(pairs, cats):
        metrics.update(pred, gt, category=cat)
    res = metrics.compute()
    pc = res["per_category"]
    assert sorted(pc["super_class"]) == ["Aquatic", "Flying"]
    assert sorted(pc["sub_class"]) == ["Crab", "Flounder", "Owl"]
    assert pc["super_class"]["Aquatic"]["n"] == 3
    ref = _reference([pairs[0], pairs[1], pairs[4]])
    for key, value in ref.items():
        assert pc["super_class"]["Aquatic"][key] == pytest.approx(float(value), rel=1e-12), key
    ref_owl = _reference([pairs[2], pairs[5]])
    assert pc["sub_class"]["Owl"]["Sm"] == pytest.approx(float(ref_owl["Sm"]), rel=1e-12)


def test_category_objects_with_attributes():
    class Cat:
        super_class, sub_class, camouflaged = "Terrestrial", "Cat", True

    metrics = CODMetrics(measures=("Sm",))
    pred, gt = _pairs(1)[0]
    metrics.update(pred, gt, Cat())
    assert metrics.compute()["per_category"]["sub_class"]["Cat"]["n"] == 1


def test_cheap_measures_and_partial_sums():
    pairs = _pairs(4)
    metrics = CODMetrics(measures=("Sm", "MAE"))
    for pred, gt in pairs:
        metrics.update(pred, gt)
    res = metrics.compute()
    assert set(res) == {"n", "Sm", "MAE", "per_category"}
    ref = _reference(pairs)
    sums = metrics.partial_sums()
    assert sums["n"] == 4
    assert sums["Sm"] / sums["n"] == pytest.approx(float(ref["Sm"]), rel=1e-12)
    assert sums["MAE"] / sums["n"] == pytest.approx(float(ref["MAE"]), rel=1e-12)
    with pytest.raises(ValueError, match="Unknown measure"):
        CODMetrics(measures=("Sx",))


def test_curves_shapes_and_consistency():
    metrics = CODMetrics()
    for pred, gt in _pairs(3):
        metrics.update(pred, gt)
    curves = metrics.curves()
    for key in ("thresholds", "precision", "recall", "fmeasure", "emeasure"):
        assert curves[key].shape == (256,), key
    res = metrics.compute()
    assert curves["fmeasure"].max() == pytest.approx(res["Fm_max"])
    assert curves["emeasure"].mean() == pytest.approx(res["Em_mean"])
    assert curves["thresholds"][0] == 1.0 and curves["thresholds"][-1] == 0.0
    assert np.all(np.diff(curves["recall"]) >= -1e-12)  # lower threshold -> recall never drops


def test_shape_mismatch_and_range_errors():
    metrics = CODMetrics()
    with pytest.raises(ValueError, match="resize_prediction"):
        metrics.update(np.zeros((10, 12), np.uint8), np.zeros((12, 10), np.uint8))
    with pytest.raises(ValueError, match="sigmoid"):
        to_uint8_pred(np.full((4, 4), 2.0))
    assert to_uint8_gt(np.array([[0, 1]], np.uint8)).tolist() == [[0, 255]]
    assert to_uint8_gt(np.array([[0.0, 128 / 255, 1.0]])).tolist() == [[0, 128, 255]]


def test_resize_prediction():
    prob = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    out = resize_prediction(prob, (50, 70))
    assert out.shape == (50, 70) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    same = resize_prediction(torch.from_numpy(prob)[None, None], (32, 32))
    assert np.array_equal(same, np.round(prob * 255).astype(np.uint8))
