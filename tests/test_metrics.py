"""mAP semantics (raysearch.metrics) and the statistics built on it (raysearch.experiment.stats):
bootstrap CIs, paired comparisons and their NaN / n < 2 edge cases, checked against hand computations."""
import math

import numpy as np
import pytest

from raysearch.experiment.stats import (_boot_indices, bootstrap_counts, corrected_resampled_ttest, fold_level_ttest,
                                        holm, mean_t_interval, paired_item_bootstrap, paired_unit_tests)
from raysearch.metrics import macro_roc_auc, mean_average_precision, per_class_ap, resampled_map


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


def test_macro_roc_auc_matches_sklearn_with_ties_and_skips_one_sided_classes():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random((60, 5)) < 0.3).astype(int)
    y[:, 3] = 0          # no positive: left out
    y[:, 4] = 1          # no negative: left out
    s = np.round(rng.random((60, 5)), 1)  # many tied scores
    want = np.mean([roc_auc_score(y[:, j], s[:, j]) for j in range(3)])
    assert macro_roc_auc(y, s) == pytest.approx(want, abs=1e-12)
    assert macro_roc_auc(y[:, :1], -s[:, :1]) == pytest.approx(1 - roc_auc_score(y[:, 0], s[:, 0]))
    assert math.isnan(macro_roc_auc(y[:, 3:], s[:, 3:]))
    with pytest.raises(ValueError, match="non-finite"):
        macro_roc_auc(np.ones((2, 1)), np.array([[np.nan], [1.0]]))


def test_resampled_map_equals_map_on_the_resampled_items():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 4)) < 0.2).astype(int)
    s = np.round(rng.random((60, 4)), 1)  # many tied scores
    counts = bootstrap_counts(60, 20, seed=3)
    idx = _boot_indices(60, 20, 3)
    assert counts.dtype == np.int32 and (counts.sum(1) == 60).all()
    np.testing.assert_array_equal(counts[0], np.bincount(idx[0], minlength=60))
    got = resampled_map(y, s, counts)
    want = [mean_average_precision(y[i], s[i]) for i in idx]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(resampled_map(y, s, np.ones((1, 60), int)), [mean_average_precision(y, s)])
    np.testing.assert_array_equal(bootstrap_counts(60, 20, seed=3), counts)  # seeded
    assert not np.array_equal(bootstrap_counts(60, 20, seed=4), counts)


def test_item_bootstrap_ci_brackets_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.3).astype(int)
    s = y + rng.normal(0, 0.8, y.shape)
    res = paired_item_bootstrap(y, {"image_only": [s]}, "image_only", n_boot=200, seed=1)
    est = res.pooled_map["image_only"]
    assert est == pytest.approx(mean_average_precision(y, s))
    assert res.map_low["image_only"] <= est <= res.map_high["image_only"]
    assert 0 < res.map_high["image_only"] - res.map_low["image_only"] < 0.2
    assert paired_item_bootstrap(y, {"image_only": [s]}, "image_only", n_boot=200, seed=1) == res
    assert paired_item_bootstrap(y, {"image_only": [s]}, "image_only", n_boot=200, seed=2) != res


def test_item_bootstrap_difference_and_p_value_by_hand():
    """CI = percentiles of the paired resampled differences; p = 2 (k + 1) / (B + 1), k the smaller tail."""
    rng = np.random.default_rng(0)
    y = (rng.random((120, 4)) < 0.3).astype(int)
    weak = y + rng.normal(0, 2.0, y.shape)
    mixed = y + rng.normal(0, 1.9, y.shape)
    B = 99
    res = paired_item_bootstrap(y, {"image_only": [weak], "mixed": [mixed]}, "image_only", n_boot=B, seed=5)
    counts = bootstrap_counts(120, B, 5)
    d = resampled_map(y, mixed, counts) - resampled_map(y, weak, counts)
    k = min(int((d <= 0).sum()), int((d >= 0).sum()))
    assert res.p_value["mixed"] == pytest.approx(min(1.0, 2 * (k + 1) / (B + 1)))
    assert res.diff["mixed"] == pytest.approx(mean_average_precision(y, mixed) - mean_average_precision(y, weak))
    assert (res.diff_low["mixed"], res.diff_high["mixed"]) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))
    strong = y + rng.normal(0, 0.5, y.shape)
    res = paired_item_bootstrap(y, {"image_only": [weak], "strong": [strong]}, "image_only", n_boot=B, seed=5)
    assert res.diff_low["strong"] > 0 and res.p_value["strong"] == pytest.approx(2 / (B + 1))  # never 0
    with pytest.raises(ValueError, match="no pooled scores"):
        paired_item_bootstrap(y, {"image_only": [weak], "empty": []}, "image_only", n_boot=5)


def test_mean_t_interval_matches_hand_computation():
    """d = (1, 2, 3): mean 2, sd 1; Student t with 2 df has F(t) = 1/2 + t / (2 sqrt(t^2 + 2)), so its
    0.975 quantile solves t / sqrt(t^2 + 2) = 0.95: t^2 = 2 * 0.9025 / 0.0975; half-width t / sqrt 3."""
    t = math.sqrt(2 * 0.9025 / 0.0975)
    mean, half = mean_t_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and half == pytest.approx(t / math.sqrt(3), rel=1e-9)
    assert mean_t_interval([0.5])[0] == 0.5 and math.isnan(mean_t_interval([0.5])[1])
    assert all(math.isnan(x) for x in mean_t_interval([]))


def test_paired_unit_tests_match_hand_computation():
    """d = (1, 2, 3): t = mean / (sd / sqrt n) = 2 sqrt(3); Student t with 2 df has the closed-form
    two-sided p = 1 - t / sqrt(t^2 + 2).  Wilcoxon, n = 3 all positive: W = 6 is the largest of the
    2^3 equally likely signed-rank sums, two-sided exact p = 2 / 8."""
    a = np.array([0.10, 0.20, 0.30])
    t = 2 * math.sqrt(3)
    t_p, w_p = paired_unit_tests(a, a + np.array([1.0, 2.0, 3.0]))
    assert t_p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert w_p == pytest.approx(0.25)
    # the order matters only for the sign: both tests are two-sided
    assert paired_unit_tests(a + np.array([1.0, 2.0, 3.0]), a) == pytest.approx((t_p, w_p))


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on the constant difference
def test_paired_unit_tests_edge_cases():
    same = np.array([0.3, 0.31, 0.29])
    assert paired_unit_tests(same, same.copy()) == (1.0, 1.0)  # all differences 0: p = 1 (scipy: NaN)
    t_p, w_p = paired_unit_tests(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.5, 1.5, 2.5, 3.5]))
    assert t_p == 0.0 and w_p == pytest.approx(2 / 16)  # constant non-zero difference: unanimous sign
    for n in (0, 1):  # n < 2: NaN, no exception
        r = paired_unit_tests(np.ones(n), np.zeros(n))
        assert math.isnan(r[0]) and math.isnan(r[1])
    r = paired_unit_tests(np.array([0.1, np.nan, 0.3, 0.2]), np.array([0.2, 0.3, 0.5, 0.1]))
    assert math.isnan(r[0]) and math.isnan(r[1])  # a NaN unit propagates (never silently dropped)
    with pytest.raises(ValueError, match="matched units"):
        paired_unit_tests(np.ones(3), np.ones(2))


def test_corrected_and_fold_level_ttests_drop_nan_and_need_two_units():
    d = np.array([0.02, 0.01, 0.03, -0.01, 0.02, 0.02])
    with_nan = np.insert(d, [1, 4], np.nan)
    assert corrected_resampled_ttest(with_nan, 0.25) == corrected_resampled_ttest(d, 0.25)
    for few in (np.array([]), np.array([0.1]), np.array([0.1, np.nan])):
        t, p = corrected_resampled_ttest(few, 0.25)
        assert math.isnan(t) and math.isnan(p)
    assert corrected_resampled_ttest(np.array([0.0, 0.0, np.nan]), 0.25) == (0.0, 1.0)
    assert corrected_resampled_ttest(np.array([0.5, 0.5, 0.5]), 0.25) == (math.inf, 0.0)  # var 0
    assert corrected_resampled_ttest(np.array([-0.25, -0.25]), 0.25) == (-math.inf, 0.0)
    # fold level: fold means (0.1, 0.3 (NaN dropped), 0.2), then a one-sample t over 3 folds:
    # mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = 2 sqrt 3, p = 1 - t / sqrt(t^2 + 2) (2 df)
    k, p = fold_level_ttest(np.array([0.1, 0.1, 0.3, np.nan, 0.2, 0.2]), np.array([0, 0, 1, 1, 2, 2]))
    t = 2 * math.sqrt(3)
    assert k == 3 and p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    k, p = fold_level_ttest(np.array([np.nan, np.nan, 0.2, 0.1]), np.array([0, 0, 1, 1]))
    assert k == 1 and math.isnan(p)  # a fold with only NaN units is no fold; 1 fold < 2
    assert fold_level_ttest(np.array([0.0, 0.0, 0.0, 0.0]), np.array([0, 0, 1, 1])) == (2, 1.0)
    assert fold_level_ttest(np.array([0.25, 0.75, 0.5, 0.5]), np.array([0, 0, 1, 1])) == (2, 0.0)


def test_holm_edge_cases():
    # hand computation: sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    np.testing.assert_allclose(holm([0.04, np.nan, 0.01, 0.03]), [0.06, np.nan, 0.03, 0.06])
    assert holm([]).shape == (0,)
    assert np.isnan(holm([np.nan, np.nan])).all()
    assert holm([0.02]) == pytest.approx([0.02])  # one hypothesis: unadjusted


def test_average_precision_is_sklearns_bit_for_bit():
    """The fast per-class AP equals sklearn's ``average_precision_score`` exactly (==, not close):
    continuous scores, heavily tied scores (rounded) and float32-valued scores, all prevalences."""
    from sklearn.metrics import average_precision_score

    from raysearch.metrics import _average_precision, per_class_ap

    rng = np.random.default_rng(0)
    for t in range(600):
        m = int(rng.integers(2, 200))
        y = (rng.random(m) < rng.random()).astype(np.int8)
        y[int(rng.integers(m))] = 1
        s = (rng.random(m), np.round(rng.random(m), 1), rng.random(m).astype(np.float32).astype(np.float64))[t % 3]
        assert _average_precision(y, s) == average_precision_score(y, s), (t, y, s)
    y = (rng.random((50, 4)) < 0.3).astype(np.int8)
    y[:, 3] = 0
    s = rng.random((50, 4))
    ap = per_class_ap(y, s)
    assert np.isnan(ap[3]) and all(ap[j] == average_precision_score(y[:, j], s[:, j]) for j in range(3))
