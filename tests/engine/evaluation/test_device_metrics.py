"""The batched device S-measure/MAE equals PySODMetrics on the same uint8 maps."""
import numpy as np
import py_sod_metrics
import pytest
import torch

from engine.evaluation.device_metrics import batch_sm_mae, quantize_gt, quantize_pred


def _reference(pred_u8: np.ndarray, gt_u8: np.ndarray):
    sm, mae = py_sod_metrics.Smeasure(), py_sod_metrics.MAE()
    sm.step(pred=pred_u8, gt=gt_u8)
    mae.step(pred=pred_u8, gt=gt_u8)
    return float(sm.get_results()["sm"]), float(mae.get_results()["mae"])


def _cases(h=37, w=53):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    cases = []
    for k in range(6):  # blobs of different sizes and places, soft predictions around them
        cy, cx, r = rng.integers(4, h - 4), rng.integers(4, w - 4), rng.integers(2, 12)
        gt = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32)
        prob = np.clip(gt * rng.uniform(0.3, 1.0) + rng.normal(0, 0.2, gt.shape), 0, 1).astype(np.float32)
        cases.append((prob, gt))
    cases.append((rng.random((h, w)).astype(np.float32), np.zeros((h, w), np.float32)))  # empty mask
    cases.append((rng.random((h, w)).astype(np.float32), np.ones((h, w), np.float32)))  # full mask
    one = np.zeros((h, w), np.float32)
    one[5, 7] = 1.0  # a single foreground pixel
    cases.append((rng.random((h, w)).astype(np.float32), one))
    cases.append((np.full((h, w), 0.25, np.float32), np.zeros((h, w), np.float32)))  # constant: no stretch
    # (A constant prediction on a partly filled mask is left out: there PySODMetrics' block SSIM
    # turns on whether NumPy's mean of identical values rounds back to them exactly.)
    cases.append((rng.random((h, w)).astype(np.float32), (rng.random((h, w)) > 0.5).astype(np.float32) * 0.7))
    return cases


def test_matches_pysodmetrics_per_image():
    cases = _cases()
    prob = torch.from_numpy(np.stack([c[0] for c in cases]))  # (B, H, W)
    gt = torch.from_numpy(np.stack([c[1] for c in cases]))
    sm, mae = batch_sm_mae(prob.unsqueeze(1), quantize_gt(gt).unsqueeze(1))
    assert sm.shape == mae.shape == (len(cases),)
    for i, (p, g) in enumerate(cases):
        ref_sm, ref_mae = _reference(quantize_pred(torch.from_numpy(p)).numpy(), quantize_gt(torch.from_numpy(g)).numpy())
        assert sm[i].item() == pytest.approx(ref_sm, abs=1e-9), i
        assert mae[i].item() == pytest.approx(ref_mae, abs=1e-9), i


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="resize the prediction"):
        batch_sm_mae(torch.rand(2, 8, 8), torch.zeros(2, 8, 9, dtype=torch.uint8))
