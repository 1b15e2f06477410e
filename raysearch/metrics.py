"""Evaluation metrics: macro mAP and per-class AP (also on bootstrap resamples, :func:`resampled_map`),
and macro ROC AUC (:func:`macro_roc_auc`), which ASHA's rungs can judge on (``--rung-metric val_auc``).

Macro mAP follows sklearn's ``average_precision_score`` per class, averaged over the classes
that have at least one positive in the evaluated set.  A class with no positive there has an
undefined AP (sklearn returns 0 with a warning, which would silently drag the mean down), so
it is *excluded* from the mean; :func:`per_class_ap` reports it as NaN.  Scores may be logits
or probabilities (AP only depends on the ranking).

The statistics built on it (bootstrap resamples, paired tests, CIs, Holm) live in
:mod:`raysearch.experiment.stats`.
"""
from __future__ import annotations

import numpy as np

from raysearch.errors import InputError


def _check(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score.reshape(-1, 1)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true shape {y_true.shape} != y_score shape {y_score.shape}")
    if not np.isfinite(y_score).all():
        raise ValueError(f"y_score has {int((~np.isfinite(y_score)).sum())} non-finite values")
    return (y_true > 0).astype(np.int8), y_score


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """sklearn's ``average_precision_score`` for one class with a positive, computed with the same
    operations in the same order (bit-identical; ``tests/test_metrics.py`` checks it), without its
    input validation, which cost ~2 ms per class: most of a trial's per-epoch validation time."""
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    idx = np.concatenate((np.flatnonzero(np.diff(ss)), [len(ss) - 1]))
    tps = np.cumsum(y[order], dtype=np.float64)[idx]
    fps = 1 + idx.astype(np.float64) - tps
    precision = np.concatenate((np.flip(tps / (tps + fps)), [1.0]))  # tps + fps = idx + 1 >= 1
    recall = np.concatenate((np.flip(tps / tps[-1]), [0.0]))
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def per_class_ap(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """AP per class (float64, length n_classes); NaN for classes with no positive."""
    y, s = _check(y_true, y_score)
    out = np.full(y.shape[1], np.nan)
    for j in np.flatnonzero(y.sum(0) > 0):
        out[j] = _average_precision(y[:, j], s[:, j])
    return out


def mean_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Macro mAP over classes with >= 1 positive in ``y_true``; error if there is none."""
    ap = per_class_ap(y_true, y_score)
    if np.isnan(ap).all():
        raise InputError("mAP undefined: no class has a positive example in the evaluated set")
    return float(np.nanmean(ap))


def _roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of one class with positives and negatives: the Mann-Whitney U over average ranks
    (tied scores count one half, as sklearn's ``roc_auc_score``)."""
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inv]  # 1-based average rank of each item
    p = float(y.sum())
    return float((ranks[y > 0].sum() - p * (p + 1) / 2.0) / (p * (len(y) - p)))


def macro_roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Macro ROC AUC over the classes with both a positive and a negative in ``y_true``; NaN if none.

    Why it exists: on a small validation set an AP hinges on the few positives ranked first, so
    val mAP is a coarse early sign of a configuration's worth; AUC counts every positive-negative
    pair.  On the synthetic world it ranked configurations by their test mAP better than val mAP
    from epoch 2 on (``bench/bench_rung_signal.py``), so ASHA can judge its rungs on it
    (``--rung-metric val_auc``)."""
    y, s = _check(y_true, y_score)
    n_pos = y.sum(0)
    cls = np.flatnonzero((n_pos > 0) & (n_pos < len(y)))
    if not len(cls):
        return float("nan")
    return float(np.mean([_roc_auc(y[:, j], s[:, j]) for j in cls]))


def resampled_map(y_true: np.ndarray, y_score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Macro mAP on each bootstrap resample given as item multiplicities ``counts`` (n_boot, n).

    Equal to ``mean_average_precision(y[idx], s[idx])`` for the resample ``idx`` (AP with integer
    sample weights is AP on the repeated items; tied scores are one threshold, as in sklearn),
    but vectorised over resamples: one sort per class instead of one per resample and class.
    Classes without a positive in a resample are left out of that resample's mean.
    """
    y, s = _check(y_true, y_score)
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != len(y):
        raise ValueError(f"counts must be (n_boot, {len(y)}), got {counts.shape}")
    ap_sum = np.zeros(len(counts))
    n_cls = np.zeros(len(counts))
    for j in range(y.shape[1]):
        order = np.argsort(-s[:, j], kind="stable")
        pos = y[order, j].astype(np.int64)
        if pos.sum() == 0:
            continue
        sj = s[order, j]
        ends = np.flatnonzero(np.r_[sj[1:] != sj[:-1], True])  # last index of each tied-score group
        c = counts[:, order]
        tp = np.cumsum(c * pos, axis=1)[:, ends]
        tot = np.cumsum(c, axis=1)[:, ends]
        d_tp = np.diff(tp, axis=1, prepend=0)
        prec = np.divide(tp, tot, out=np.zeros(tp.shape), where=tot > 0)
        p_total = tp[:, -1]
        has = p_total > 0
        ap_sum[has] += (d_tp * prec).sum(1)[has] / p_total[has]
        n_cls += has
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_cls > 0, ap_sum / np.maximum(n_cls, 1), np.nan)
