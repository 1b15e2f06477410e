"""Per-item weights of the auxiliary loss: uniform, interaction (sqrt |U_i|), loss-based (out of fold)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from raysearch.cf import WEIGHTINGS, CF2LabelConfig, compute_item_vectors, item_weights
from raysearch.cf import cf2label as cf2label_mod
from raysearch.config import CFConfig, SplitConfig
from raysearch.data import load_dataset, make_split, write_dataset
from raysearch.registry import UnknownNameError

torch.set_num_threads(1)

CF = CFConfig(epochs=30, dim=16, hidden=(32,), batch_size=32)
MLP = CF2LabelConfig(hidden=32, epochs=80)


@pytest.fixture(scope="module")
def world():
    ds = load_dataset("synthetic")
    split = make_split(ds, SplitConfig(seed=0, label_ratio=0.5))
    return ds, split, compute_item_vectors(ds, split, CF)


def test_registry():
    assert WEIGHTINGS.names() == ["interaction", "loss", "loss_rescaled", "uniform"]
    with pytest.raises(UnknownNameError, match="choose one of: interaction, loss, loss_rescaled, uniform"):
        WEIGHTINGS.get("sqrt")


def test_uniform_is_constant_where_defined(world):
    ds, split, iv = world
    w = item_weights("uniform", ds, split, iv)
    assert w.dtype == np.float32 and w.shape == (ds.n_items,)
    assert (w[iv.has_vector] == 1).all() and (w[~iv.has_vector] == 0).all()
    assert (w[split.val] == 0).all() and (w[split.test] == 0).all()


def test_interaction_is_sqrt_of_users_and_monotone(world):
    ds, split, iv = world
    w = item_weights("interaction", ds, split, iv)
    d = iv.has_vector
    np.testing.assert_allclose(w[d], np.sqrt(iv.n_interactions[d]), rtol=1e-6)
    order = np.argsort(iv.n_interactions[d], kind="stable")
    assert (np.diff(w[d][order]) >= 0).all() and (w[~d] == 0).all()
    assert np.unique(iv.n_interactions[d]).size > 5  # the property is tested over many distinct |U_i|


def test_loss_weights_finite_positive_with_documented_fallback(world, caplog):
    ds, split, iv = world
    with caplog.at_level(logging.INFO, logger="raysearch.cf"):
        w = item_weights("loss", ds, split, iv, seed=0, cf2label=MLP, use_cache=False)
    d = iv.has_vector
    assert np.isfinite(w).all() and (w[d] > 0).all() and (w[~d] == 0).all()
    hidden = split.train[d[split.train] & ~split.labelled[split.train]]
    assert len(hidden) > 100 and (w[hidden] == 1.0).all()  # labels hidden: uniform fallback
    scored = split.train_labelled[d[split.train_labelled]]
    assert np.unique(w[scored]).size > len(scored) // 2  # real per-item values, not a constant
    assert "hidden labels" in caplog.text


def test_loss_weights_relative_to_the_median_and_clipped(world):
    """No item weighs more than LOSS_RANGE^2 times another; the median scored item weighs 1.0 (the
    fallback's weight); weight_stats reports the fallback share and the range a report shows."""
    from raysearch.cf.weights import LOSS_RANGE, weight_stats

    ds, split, iv = world
    w = item_weights("loss", ds, split, iv, seed=0, cf2label=MLP, use_cache=False)
    scored = split.train_labelled[iv.has_vector[split.train_labelled] & (ds.label_matrix[split.train_labelled].sum(1) > 0)]
    assert np.median(w[scored]) == pytest.approx(1.0, rel=1e-3)
    tr = split.train[iv.has_vector[split.train]]
    assert w[tr].min() >= 1 / LOSS_RANGE - 1e-6 and w[tr].max() <= LOSS_RANGE + 1e-6
    st = weight_stats("loss", split, iv.has_vector, w, ds.label_matrix)
    assert st["fallback_share"] == pytest.approx(1 - len(scored) / len(tr))
    assert st["min"] == pytest.approx(w[tr].min()) and st["max"] == pytest.approx(w[tr].max())


def test_rescale_authors_clips_percentiles_and_maps_to_1_3():
    from raysearch.cf.weights import rescale_authors

    raw = np.arange(1.0, 102.0)  # 25th pct 26, 75th pct 76
    out = rescale_authors(raw)
    assert out.min() == 1.0 and out.max() == 3.0
    assert (out[raw <= 26] == 1.0).all() and (out[raw >= 76] == 3.0).all()
    assert out[50] == pytest.approx(1 + 2 * (51 - 26) / 50)
    assert (rescale_authors(np.full(5, 7.0)) == 1.0).all()


def test_loss_rescaled_weights_follow_the_authors_code(world):
    ds, split, iv = world
    raw = item_weights("loss", ds, split, iv, seed=0, cf2label=MLP, use_cache=False)
    w = item_weights("loss_rescaled", ds, split, iv, seed=0, cf2label=MLP, use_cache=False)
    d = iv.has_vector
    assert (w[~d] == 0).all() and (w[d] >= 1).all() and (w[d] <= 3).all()
    hidden = split.train[d[split.train] & ~split.labelled[split.train]]
    assert (w[hidden] == 1.0).all()  # unscored items: the minimum weight (the code's choice)
    scored = split.train_labelled[d[split.train_labelled]]
    lo, hi = np.percentile(raw[scored].astype(np.float64), [25, 75])
    assert (w[scored][raw[scored] <= lo] == pytest.approx(1.0)) and (w[scored][raw[scored] >= hi] == pytest.approx(3.0))
    assert np.corrcoef(w[scored], np.clip(raw[scored], lo, hi))[0, 1] > 0.999  # monotone linear map


def test_loss_weights_track_vector_quality(world):
    """Items whose vectors are replaced by another item's get lower loss-based weights."""
    ds, split, iv = world
    rng = np.random.default_rng(1)
    scored = split.train_labelled[iv.has_vector[split.train_labelled]]
    bad = rng.choice(scored, size=len(scored) // 4, replace=False)
    orig = iv.vectors.copy()
    try:
        iv.vectors[bad] = iv.vectors[rng.permutation(bad)]
        w = item_weights("loss", ds, split, iv, cf2label=MLP, use_cache=False)
    finally:
        iv.vectors[:] = orig
    good = np.setdiff1d(scored, bad)
    assert np.median(w[bad]) < np.median(w[good])


def test_weights_cached_beside_vectors(world, monkeypatch):
    ds, split, iv = world
    assert iv.path is not None
    w1 = item_weights("loss", ds, split, iv, cf2label=MLP)
    files = list(iv.path.parent.glob(f"{iv.key}.weights-loss-*.parquet"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("CF2Label retrained on a cache hit")

    monkeypatch.setattr(cf2label_mod, "fit_cf2label", boom)
    np.testing.assert_array_equal(item_weights("loss", ds, split, iv, cf2label=MLP), w1)
    with pytest.raises(AssertionError):  # another seed is another key: recomputed
        item_weights("loss", ds, split, iv, seed=1, cf2label=MLP)


def test_items_without_interactions_get_zero(tmp_path, caplog):
    base = load_dataset("synthetic-tiny")
    split0 = make_split(base, SplitConfig(seed=0))
    lonely = base.items["item_id"].iat[int(split0.train[0])]
    inter = base.interactions[base.interactions["item_id"] != lonely]
    ds = load_dataset(str(write_dataset(tmp_path / "lonely", base.items, inter, name="lonely", source="test",
                                        labels=base.label_names)))
    split = make_split(ds, SplitConfig(seed=0))
    iv = compute_item_vectors(ds, split, CFConfig(epochs=10, dim=8, hidden=(16,)), data_root=tmp_path)
    i = ds.item_index[lonely]
    assert i in split.train and not iv.has_vector[i]
    with caplog.at_level(logging.WARNING, logger="raysearch.cf"):
        for scheme in WEIGHTINGS.names():
            w = item_weights(scheme, ds, split, iv, cf2label=CF2LabelConfig(hidden=8, epochs=20, folds=3))
            assert w[i] == 0 and (w[iv.has_vector] > 0).all()
    assert "1 of" in caplog.text and "no interactions" in caplog.text


def test_vectors_of_another_split_are_rejected(world):
    ds, split, iv = world
    from raysearch.cf import CFError

    with pytest.raises(CFError, match="another split"):
        item_weights("uniform", ds, make_split(ds, SplitConfig(seed=5)), iv)
