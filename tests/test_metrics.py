"""mAP semantics, bootstrap CIs and paired comparisons."""
import numpy as np
import pytest
from scipy.stats import ttest_rel

from raysearch.metrics import (bootstrap_ci, mean_average_precision, paired_bootstrap, paired_ttest,
                               per_class_ap)


def test_ap_hand_computed():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    s = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.9], [0.1, 0.3]])
    # class 0 ranking: 1(+) 2(-) 3(+) -> AP = (1/1 + 2/3) / 2 ; class 1 ranking: item2(-) item3(-) item1(+) -> 1/3
    ap = per_class_ap(y, s)
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert ap[1] == pytest.approx(1 / 3)
    assert mean_average_precision(y, s) == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)


def test_classes_without_positives_are_excluded():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.5], [0.1, 0.5], [0.8, 0.5]])
    ap = per_class_ap(y, s)
    assert ap[0] == 1.0 and np.isnan(ap[1])
    assert mean_average_precision(y, s) == 1.0
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(np.zeros((3, 2)), s)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        mean_average_precision(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        mean_average_precision(np.ones((2, 1)), np.array([[np.nan], [1.0]]))


def test_bootstrap_ci_brackets_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.3).astype(int)
    s = y + rng.normal(0, 0.8, y.shape)
    ci = bootstrap_ci(y, s, n=200, seed=1)
    assert ci.low <= ci.estimate <= ci.high
    assert ci.high - ci.low < 0.2
    assert bootstrap_ci(y, s, n=200, seed=1) == ci


def test_paired_bootstrap_detects_better_model():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 4)) < 0.3).astype(int)
    weak = y + rng.normal(0, 2.0, y.shape)
    strong = y + rng.normal(0, 0.5, y.shape)
    r = paired_bootstrap(y, weak, strong, n=300, seed=0)
    assert r.diff > 0 and r.low > 0 and r.p_value < 0.01
    same = paired_bootstrap(y, weak, weak, n=50, seed=0)
    assert same.diff == 0 and same.p_value == 1.0


def test_paired_ttest_matches_scipy():
    a, b = [0.30, 0.32, 0.29, 0.31], [0.33, 0.34, 0.30, 0.35]
    t, p = paired_ttest(a, b)
    ref = ttest_rel(b, a)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    with pytest.raises(ValueError):
        paired_ttest([1.0, 2.0], [1.0])


def test_resampled_map_equals_map_on_the_resampled_items():
    from raysearch.metrics import _boot_indices, bootstrap_counts, mean_average_precision, resampled_map

    rng = np.random.default_rng(0)
    y = (rng.random((60, 4)) < 0.2).astype(int)
    s = np.round(rng.random((60, 4)), 1)  # many tied scores
    counts = bootstrap_counts(60, 20, seed=3)
    idx = _boot_indices(60, 20, 3)
    assert (counts.sum(1) == 60).all()
    got = resampled_map(y, s, counts)
    want = [mean_average_precision(y[i], s[i]) for i in idx]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(resampled_map(y, s, np.ones((1, 60), int)), [mean_average_precision(y, s)])
