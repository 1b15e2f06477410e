"""Honest comparisons for ``raysearch experiment``: paired over folds x seeds and over items.

The one statistics module of raysearch (the metric itself, macro mAP, is :mod:`raysearch.metrics`).
Edge cases: NaN units are left out by the corrected and the fold-level t-test and propagate in
:func:`paired_unit_tests` (any NaN unit gives NaN p-values); fewer than 2 (non-NaN) units or folds
give NaN p-values, never an exception (the corrected t also needs units from 2 folds); all-zero
differences give p = 1, a constant non-zero difference p = 0; :func:`holm` keeps NaN p-values NaN and does not count them as hypotheses.

* **The verdict's test: Nadeau-Bengio corrected resampled t-test** over the fold x seed units
  (:func:`corrected_resampled_ttest`; Nadeau & Bengio 2003, in the repeated k-fold form of
  Bouckaert & Frank 2004).  The units are not independent: the seeds of one fold share its test
  items and training items, and the folds share training items, so the plain paired t-test's
  variance sigma^2 / n is too small.  The corrected variance is (1/n + n_test/n_train) sigma^2 with
  n = folds x seeds units and n_test/n_train the test/train size ratio of the folds; df = n - 1.
* **Beside it, fold level**: seeds averaged within each fold, then a paired t-test over the k folds
  (:func:`fold_level_ttest`): removes the seed dependence, not the folds' shared training items.
* **Unit level (not used for the verdict)**: the plain paired t-test (scipy ``ttest_rel``) and the
  Wilcoxon signed-rank test over units, which treat the units as independent and so overstate
  the evidence; kept, labelled as such, for comparison with earlier reports.  Identical results
  (all differences exactly 0) give p = 1 by definition (scipy returns NaN there).
* **Items**: each variant's out-of-fold test scores are pooled per seed (every item is a test
  item exactly once, scored by the fold model that never saw it).  One set of bootstrap
  resamples of the *items* is drawn and every variant and seed is scored on the same resamples
  (:func:`raysearch.metrics.resampled_map`); per resample, a variant's mAP is the mean over seeds.
  The CI of the difference to Image-only is the percentile interval of those paired differences
  and the p-value the two-sided bootstrap p, 2 (k + 1) / (B + 1) with k the smaller count of
  resampled differences <= 0 or >= 0 (never 0; a variant against itself gives exactly 1).
* **Multiplicity**: Holm's step-down correction across the variants compared with Image-only
  (within one label ratio, per test).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysearch.metrics import resampled_map


def _boot_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """int64 (n_boot, n): the item indices of each bootstrap resample (drawn with replacement)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_counts(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """int32 (n_boot, n): how often each item is drawn in each bootstrap resample (with replacement).

    Generate these once and score *every* model on them: the resampled item sets are then
    identical across models, which is what makes a bootstrap comparison paired.
    """
    idx = _boot_indices(n, n_boot, seed)
    out = np.zeros((n_boot, n), dtype=np.int32)
    rows = np.repeat(np.arange(n_boot), n)
    np.add.at(out, (rows, idx.ravel()), 1)
    return out


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaNs stay NaN and do not count as hypotheses)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def corrected_resampled_ttest(diffs: np.ndarray, test_train_ratio: float,
                              folds: np.ndarray | None = None) -> tuple[float, float]:
    """(t, two-sided p) of the Nadeau-Bengio corrected resampled t-test on per-unit differences.

    t = mean(d) / sqrt((1/n + n2/n1) * var(d)) with var the sample variance (ddof 1) and df = n - 1.
    All-zero differences give (0, 1); a constant non-zero difference (variance 0) gives p = 0.
    ``folds`` (each unit's fold): units from fewer than 2 folds give NaN.  The test's variance is
    that of resampled train/test splits; the seeds of one fold share its split, so their spread is
    training noise alone and says nothing about other data (a partial run can hold one fold)."""
    from scipy.stats import t as student_t

    d = np.asarray(diffs, dtype=float)
    ok = ~np.isnan(d)
    d = d[ok]
    n = len(d)
    if n < 2 or (folds is not None and len(np.unique(np.asarray(folds)[ok])) < 2):
        return float("nan"), float("nan")
    if np.all(d == 0):
        return 0.0, 1.0
    var = float(np.var(d, ddof=1))
    if var == 0:
        return float(np.sign(d.mean()) * np.inf), 0.0
    t = float(d.mean() / np.sqrt((1.0 / n + float(test_train_ratio)) * var))
    return t, float(2 * student_t.sf(abs(t), df=n - 1))


def fold_level_ttest(diffs: np.ndarray, folds: np.ndarray) -> tuple[int, float]:
    """(number of folds, paired t p) after averaging the per-unit differences within each fold."""
    from scipy.stats import ttest_1samp

    d = pd_groupby_mean(np.asarray(diffs, dtype=float), np.asarray(folds))
    if len(d) < 2:
        return len(d), float("nan")
    if np.all(d == 0):
        return len(d), 1.0
    if np.all(d == d[0]):
        return len(d), 0.0
    return len(d), float(ttest_1samp(d, 0.0).pvalue)


def pd_groupby_mean(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per distinct key (sorted keys), NaNs ignored."""
    ok = ~np.isnan(values)
    uniq = np.unique(keys[ok])
    return np.array([values[ok][keys[ok] == k].mean() for k in uniq])


def mean_t_interval(diffs, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of its ``level`` t interval) of independent paired differences, e.g. one per
    searcher seed or per benchmark round; the half-width is NaN for fewer than 2 differences."""
    from scipy.stats import t

    d = np.asarray(diffs, float)
    if len(d) < 2:
        return float(d.mean()) if len(d) else float("nan"), float("nan")
    return float(d.mean()), float(t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))


def paired_unit_tests(ref: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(paired t-test p, Wilcoxon signed-rank p) of ``other - ref`` over matched units."""
    from scipy.stats import ttest_rel, wilcoxon

    a, b = np.asarray(ref, float), np.asarray(other, float)
    if a.shape != b.shape:
        raise ValueError(f"unit tests need matched units, got {a.shape} and {b.shape}")
    d = b - a
    if len(d) < 2:
        return float("nan"), float("nan")
    if np.all(d == 0):
        return 1.0, 1.0
    t = float(ttest_rel(b, a).pvalue)
    if np.all(d[0] == d):  # constant non-zero difference: t undefined, the sign is unanimous
        t = 0.0
    w = float(wilcoxon(d, zero_method="wilcox").pvalue) if np.any(d != 0) else 1.0
    return t, w


@dataclass(frozen=True)
class BootstrapComparison:
    """Per variant: pooled mAP and its CI; difference to the reference, its CI and p."""

    pooled_map: dict[str, float]
    map_low: dict[str, float]
    map_high: dict[str, float]
    diff: dict[str, float]
    diff_low: dict[str, float]
    diff_high: dict[str, float]
    p_value: dict[str, float]
    n_boot: int


def paired_item_bootstrap(y_true: np.ndarray, scores: dict[str, list[np.ndarray]], ref: str,
                          n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> BootstrapComparison:
    """``scores[variant]`` = list over seeds of pooled out-of-fold scores (n_items, L), same item
    order for all.  Every variant and seed is scored on the *same* resampled item sets."""
    n = len(y_true)
    counts = bootstrap_counts(n, n_boot, seed)
    full = np.ones((1, n), dtype=np.int32)
    boot: dict[str, np.ndarray] = {}
    point: dict[str, float] = {}
    for v, per_seed in scores.items():
        if not per_seed:
            raise ValueError(f"variant {v!r} has no pooled scores")
        boot[v] = np.mean([resampled_map(y_true, s, counts) for s in per_seed], axis=0)
        point[v] = float(np.mean([resampled_map(y_true, s, full)[0] for s in per_seed]))
    q = (1 - level) / 2
    res: dict[str, dict[str, float]] = {k: {} for k in ("lo", "hi", "d", "dlo", "dhi", "p")}
    for v in scores:
        res["lo"][v], res["hi"][v] = (float(x) for x in np.nanquantile(boot[v], [q, 1 - q]))
        d = boot[v] - boot[ref]
        res["d"][v] = point[v] - point[ref]
        res["dlo"][v], res["dhi"][v] = (float(x) for x in np.nanquantile(d, [q, 1 - q]))
        # +1 correction: with B resamples the smallest reportable p is 2/(B+1), never 0
        tail = min(np.sum(d <= 0), np.sum(d >= 0))
        res["p"][v] = float(min(1.0, 2 * (tail + 1) / (len(d) + 1)))
    return BootstrapComparison(point, res["lo"], res["hi"], res["d"], res["dlo"], res["dhi"], res["p"], n_boot)
