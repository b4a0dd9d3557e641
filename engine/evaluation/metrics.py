"""COD metrics with PySODMetrics: S-measure, E-measure, weighted F, F-measure, MAE, per COD10K category.

The numbers are PySODMetrics' own: every image goes through its ``step(pred=uint8, gt=uint8)`` at
the ground truth's size, and dataset scores are plain means over images (mean/max E and F come
from the averaged 256-point curves), exactly as ``get_results()`` computes them. Predictions are
resized to the ground truth's size with :func:`engine.inference.postprocess.resize_prediction`;
the ground truth is never resized.

Example::

    metrics = CODMetrics()
    for prob, gt, category in samples:
        metrics.update(resize_prediction(prob, gt.shape), gt, category)
    scores = metrics.compute()  # {"n", "Sm", "Em_adp", ..., "MAE", "per_category"}
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import py_sod_metrics

from engine.inference.postprocess import ArrayLike

if TYPE_CHECKING:
    import torch

__all__ = [
    "ALL_MEASURES",
    "CHEAP_MEASURES",
    "RESULT_KEYS",
    "CODMetrics",
    "category_names",
    "score_image",
    "to_uint8_gt",
    "to_uint8_pred",
]

#: Measure groups a :class:`CODMetrics` can be asked for; each fills the result keys listed.
ALL_MEASURES: Tuple[str, ...] = ("Sm", "Em", "wFm", "Fm", "MAE")
#: What per-epoch validation needs: both are cheap and sum over images (DDP-friendly).
CHEAP_MEASURES: Tuple[str, ...] = ("Sm", "MAE")
#: Keys of :meth:`CODMetrics.compute` (besides ``per_category``), in table order.
RESULT_KEYS: Tuple[str, ...] = (
    "n", "Sm", "Em_adp", "Em_mean", "Em_max", "wFm", "Fm_adp", "Fm_mean", "Fm_max", "MAE",
)
_KEYS_OF = {
    "Sm": ("Sm",),
    "Em": ("Em_adp", "Em_mean", "Em_max"),
    "wFm": ("wFm",),
    "Fm": ("Fm_adp", "Fm_mean", "Fm_max"),
    "MAE": ("MAE",),
}
# Aliases so ``measures=("Em_max", "Fm_mean")`` work as well as the group names.
_GROUP_OF = {key: group for group, keys in _KEYS_OF.items() for key in keys}
# torch is imported only where tensors are handled: worker processes that score images
# (engine.evaluation.evaluate.metric_pool) then start without paying for it.


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _as_numpy_2d(x: ArrayLike, what: str) -> np.ndarray:
    if _is_tensor(x):
        import torch

        x = x.detach().cpu()
        x = x.numpy() if x.dtype in (torch.uint8, torch.bool) else x.float().numpy()
    x = np.asarray(x)
    while x.ndim > 2 and x.shape[0] == 1:  # (1, 1, H, W) / (1, H, W) -> (H, W)
        x = x[0]
    if x.ndim == 3 and x.shape[-1] in (3, 4):  # an RGB(A) mask read as colour: take one channel
        x = x[..., 0]
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D map (H, W); got shape {tuple(x.shape)}.")
    return x


def to_uint8_pred(pred: ArrayLike) -> np.ndarray:
    """A prediction as the uint8 map PySODMetrics expects.

    Args:
        pred: ``uint8`` (kept as is) or a float/bool map with values in [0, 1].

    Returns:
        ``(H, W)`` uint8, rounded from ``pred * 255``.
    """
    pred = _as_numpy_2d(pred, "pred")
    if pred.dtype == np.uint8:
        return pred
    if pred.dtype == bool:
        return pred.astype(np.uint8) * 255
    pred = pred.astype(np.float64)
    if not np.isfinite(pred).all():
        raise ValueError("pred contains NaN or inf values.")
    if pred.min() < 0 or pred.max() > 1:
        raise ValueError(
            f"A float pred must be a probability map in [0, 1]; got range [{pred.min():.3g}, {pred.max():.3g}]. "
            f"Apply sigmoid to logits first."
        )
    return np.round(pred * 255.0).astype(np.uint8)


def to_uint8_gt(gt: ArrayLike) -> np.ndarray:
    """A ground-truth mask as the uint8 map PySODMetrics expects (it binarises at ``> 128``).

    Args:
        gt: ``uint8`` 0..255 (kept as is, unless its values are only 0/1, which are scaled to
            0/255 so a 0/1 label map is not read as empty), bool, or float in [0, 1] (as read by
            ``datasets.read_mask``; rounded to ``gt * 255`` so a float mask scores exactly like
            the 8-bit file it came from).
    """
    gt = _as_numpy_2d(gt, "gt")
    if gt.dtype == bool:
        return gt.astype(np.uint8) * 255
    if gt.dtype == np.uint8:
        return gt * np.uint8(255) if gt.max() <= 1 else gt
    if np.issubdtype(gt.dtype, np.integer):
        gt = gt.astype(np.int64)
        return (gt * 255 if gt.max() <= 1 else np.clip(gt, 0, 255)).astype(np.uint8)
    gt = np.nan_to_num(gt.astype(np.float64), nan=0.0)
    return np.round(np.clip(gt, 0.0, 1.0) * 255.0).astype(np.uint8)


def category_names(category: Any) -> Tuple[Optional[str], Optional[str]]:
    """``(super_class, sub_class)`` of a category given in any of the accepted forms.

    Args:
        category: None; an object with ``super_class``/``sub_class`` attributes (the datasets'
            ``Cod10kCategory``); a ``(super, sub)`` tuple; a mapping with those keys; or a
            string ``"Super"`` / ``"Super/Sub"``.
    """
    if category is None:
        return None, None
    if isinstance(category, str):
        parts = category.split("/", 1)
        return parts[0] or None, (parts[1] or None) if len(parts) > 1 else None
    if isinstance(category, dict):
        return category.get("super_class"), category.get("sub_class")
    if hasattr(category, "super_class"):
        return getattr(category, "super_class", None), getattr(category, "sub_class", None)
    if isinstance(category, (tuple, list)) and len(category) >= 1:
        return category[0], category[1] if len(category) > 1 else None
    raise TypeError(f"Unsupported category {category!r}: pass a Cod10kCategory, (super, sub), or 'Super/Sub'.")


def score_image(pred: ArrayLike, gt: ArrayLike, measures: Sequence[str] = ALL_MEASURES) -> Dict[str, Any]:
    """PySODMetrics scores of one image (a plain function, so worker processes can run it).

    Args:
        pred: prediction at the ground truth's size (uint8, or float in [0, 1]).
        gt: ground truth at its own size (see :func:`to_uint8_gt`).
        measures: measure groups among ``"Sm", "Em", "wFm", "Fm", "MAE"``.

    Returns:
        Scalars (``Sm``, ``Em_adp``, ``wFm``, ``Fm_adp``, ``MAE``) and 256-point curves
        (``em_curve``, ``fm_curve``, ``precision_curve``, ``recall_curve``) for the measures asked.

    Raises:
        ValueError: shapes differ (resize the prediction, never the ground truth).
    """
    pred_u8 = to_uint8_pred(pred)
    gt_u8 = to_uint8_gt(gt)
    if pred_u8.shape != gt_u8.shape:
        raise ValueError(
            f"Prediction shape {pred_u8.shape} differs from ground truth shape {gt_u8.shape}: resize the "
            f"prediction to the ground truth's size with resize_prediction(prob, gt.shape)."
        )
    out: Dict[str, Any] = {}
    if "Sm" in measures:
        m = py_sod_metrics.Smeasure()
        m.step(pred=pred_u8, gt=gt_u8)
        out["Sm"] = float(m.get_results()["sm"])
    if "Em" in measures:
        m = py_sod_metrics.Emeasure()
        m.step(pred=pred_u8, gt=gt_u8)
        em = m.get_results()["em"]
        out["Em_adp"] = float(em["adp"])
        out["em_curve"] = np.asarray(em["curve"], dtype=np.float64)
    if "wFm" in measures:
        m = py_sod_metrics.WeightedFmeasure()
        m.step(pred=pred_u8, gt=gt_u8)
        out["wFm"] = float(m.get_results()["wfm"])
    if "Fm" in measures:
        m = _fmeasure_v2()
        m.step(pred=pred_u8, gt=gt_u8)
        res = m.get_results()
        out["Fm_adp"] = float(res["fm"]["adaptive"])
        out["fm_curve"] = np.asarray(res["fm"]["dynamic"], dtype=np.float64)
        out["precision_curve"] = np.asarray(res["pre"]["dynamic"], dtype=np.float64)
        out["recall_curve"] = np.asarray(res["rec"]["dynamic"], dtype=np.float64)
    if "MAE" in measures:
        m = py_sod_metrics.MAE()
        m.step(pred=pred_u8, gt=gt_u8)
        out["MAE"] = float(m.get_results()["mae"])
    return out


class CODMetrics:
    """Accumulates PySODMetrics scores over images, overall and per COD10K category.

    Each image is scored once with fresh PySODMetrics objects and its scores (and 256-point
    curves) are kept, so any subset of images (a COD10K super- or sub-class) is summarised by
    the same means PySODMetrics' ``get_results()`` takes over the whole set.

    Args:
        measures: which measures to compute: any of ``"Sm", "Em", "wFm", "Fm", "MAE"`` (or the
            result keys, e.g. ``"Em_max"``, which select their group). None computes all.
            ``("Sm", "MAE")`` is the cheap set for per-epoch validation.
    """

    def __init__(self, measures: Optional[Sequence[str]] = None) -> None:
        if measures is None:
            groups = list(ALL_MEASURES)
        else:
            if isinstance(measures, str):
                measures = [measures]
            groups = []
            for m in measures:
                group = m if m in _KEYS_OF else _GROUP_OF.get(m)
                if group is None:
                    valid = ", ".join(list(ALL_MEASURES) + list(_GROUP_OF))
                    raise ValueError(f"Unknown measure {m!r}. Valid: {valid}.")
                if group not in groups:
                    groups.append(group)
        # Keep the canonical order so result dicts always list keys the same way.
        self.measures: Tuple[str, ...] = tuple(g for g in ALL_MEASURES if g in groups)
        self.reset()

    # ------------------------------------------------------------------ accumulation
    def reset(self) -> None:
        """Forget every image seen so far."""
        self._scalars: Dict[str, List[float]] = {
            k: [] for g in self.measures for k in ("Sm", "Em_adp", "wFm", "Fm_adp", "MAE") if _GROUP_OF[k] == g
        }
        self._curves: Dict[str, List[np.ndarray]] = {}
        if "Em" in self.measures:
            self._curves["em"] = []
        if "Fm" in self.measures:
            self._curves.update(fm=[], precision=[], recall=[])
        self._categories: List[Tuple[Optional[str], Optional[str]]] = []

    def __len__(self) -> int:
        return len(self._categories)

    def update(self, pred: ArrayLike, gt: ArrayLike, category: Any = None) -> Dict[str, float]:
        """Score one image.

        Args:
            pred: prediction at the ground truth's size: float probabilities in [0, 1] or uint8
                (use :func:`resize_prediction` to get there).
            gt: ground truth at its own size: uint8 0/255, bool, or float in [0, 1].
            category: the image's COD10K category (see :func:`category_names`), or None.

        Returns:
            This image's scalar scores (``Sm``, ``MAE``, ... for the measures computed).

        Raises:
            ValueError: shapes differ (resize the prediction, never the ground truth) or values
                are out of range.
        """
        return self.add(score_image(pred, gt, self.measures), category)

    def add(self, scores: Mapping[str, Any], category: Any = None) -> Dict[str, float]:
        """Record one image's scores computed by :func:`score_image` (e.g. in a worker process).

        Args:
            scores: :func:`score_image` output for (at least) this object's measures.
            category: the image's COD10K category, or None.

        Returns:
            The image's scalar scores.
        """
        missing = [k for k in self._scalars if k not in scores] + [
            k for k in self._curves if f"{k}_curve" not in scores
        ]
        if missing:
            raise ValueError(f"Scores lack {missing}: compute them with score_image(..., measures={self.measures}).")
        for key in self._scalars:
            self._scalars[key].append(float(scores[key]))
        for key in self._curves:
            self._curves[key].append(np.asarray(scores[f"{key}_curve"], dtype=np.float64))
        self._categories.append(category_names(category))
        return {key: float(scores[key]) for key in self._scalars}

    # ------------------------------------------------------------------ results
    def _summary(self, idx: Optional[np.ndarray]) -> Dict[str, Any]:
        """Means over the images ``idx`` (all when None), in PySODMetrics' float64 arithmetic."""

        def pick(values):
            arr = np.array(values, dtype=np.float64)
            return arr if idx is None else arr[idx]

        n = len(self._categories) if idx is None else int(len(idx))
        out: Dict[str, Any] = {"n": n}
        if n == 0:
            for g in self.measures:
                out.update({k: float("nan") for k in _KEYS_OF[g]})
            return out
        for g in self.measures:
            if g == "Sm":
                out["Sm"] = float(np.mean(pick(self._scalars["Sm"])))
            elif g == "Em":
                curve = np.mean(pick(self._curves["em"]), axis=0)
                out["Em_adp"] = float(np.mean(pick(self._scalars["Em_adp"])))
                out["Em_mean"] = float(curve.mean())
                out["Em_max"] = float(curve.max())
            elif g == "wFm":
                out["wFm"] = float(np.mean(pick(self._scalars["wFm"])))
            elif g == "Fm":
                curve = np.mean(pick(self._curves["fm"]), axis=0)
                out["Fm_adp"] = float(np.mean(pick(self._scalars["Fm_adp"])))
                out["Fm_mean"] = float(curve.mean())
                out["Fm_max"] = float(curve.max())
            elif g == "MAE":
                out["MAE"] = float(np.mean(pick(self._scalars["MAE"])))
        return out

    def compute(self) -> Dict[str, Any]:
        """Dataset scores.

        Returns:
            ``{"n", <one key per measure computed, in RESULT_KEYS order>, "per_category"}`` where
            ``per_category`` is ``{"super_class": {name: {...}}, "sub_class": {name: {...}}}``
            (empty when no image carried a category). Scores are NaN when no image was seen.
        """
        out = self._summary(None)
        per_category: Dict[str, Dict[str, Any]] = {}
        for level, pos in (("super_class", 0), ("sub_class", 1)):
            groups: Dict[str, List[int]] = {}
            for i, names in enumerate(self._categories):
                if names[pos]:
                    groups.setdefault(names[pos], []).append(i)
            if groups:
                per_category[level] = {
                    name: self._summary(np.array(groups[name], dtype=np.int64)) for name in sorted(groups)
                }
        out["per_category"] = per_category
        return out

    def partial_sums(self) -> Dict[str, Any]:
        """Sums over images of the cheap measures, for ``all_reduce`` across DDP ranks.

        Returns:
            ``{"n": int, "Sm": float, "MAE": float}`` (a measure not computed sums to 0.0);
            divide the reduced sums by the reduced ``n`` for the means.
        """
        return {
            "n": len(self._categories),
            "Sm": float(np.sum(np.array(self._scalars.get("Sm", []), dtype=np.float64))),
            "MAE": float(np.sum(np.array(self._scalars.get("MAE", []), dtype=np.float64))),
        }

    def curves(self) -> Dict[str, np.ndarray]:
        """Averaged 256-point curves for plotting.

        Returns:
            ``thresholds`` (256,) in [0, 1], and where computed ``precision``, ``recall``,
            ``fmeasure`` (F-measure vs threshold) and ``emeasure`` (E-measure vs threshold).
            Index ``i`` is the threshold ``(255 - i) / 255`` (binarising ``pred >= threshold``),
            the order PySODMetrics uses.

        Raises:
            RuntimeError: no image seen yet.
        """
        if not self._categories:
            raise RuntimeError("No image has been scored yet: call update() first.")
        out = {"thresholds": np.arange(255, -1, -1, dtype=np.float64) / 255.0}
        names = {"precision": "precision", "recall": "recall", "fm": "fmeasure", "em": "emeasure"}
        for key, values in self._curves.items():
            out[names[key]] = np.mean(np.array(values, dtype=np.float64), axis=0)
        return out


def _fmeasure_v2() -> "py_sod_metrics.FmeasureV2":
    # beta^2 = 0.3 is the F-measure every SOD/COD paper reports; precision and recall feed the PR curve.
    return py_sod_metrics.FmeasureV2(
        metric_handlers={
            "fm": py_sod_metrics.FmeasureHandler(with_adaptive=True, with_dynamic=True, beta=0.3),
            "pre": py_sod_metrics.PrecisionHandler(with_adaptive=False, with_dynamic=True),
            "rec": py_sod_metrics.RecallHandler(with_adaptive=False, with_dynamic=True),
        }
    )
