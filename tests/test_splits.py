"""Item-level splits: sizes, determinism, label coverage, label scarcity, CF isolation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysearch.config import ConfigError, SplitConfig
from raysearch.data import DatasetError, load_folder, make_split, write_dataset


def _dataset(root, n=200, n_labels=12, seed=0, rare=(), empty=()):
    """Random multi-label items; ``rare`` labels get exactly 2 items; ``empty`` rows have no labels."""
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(n):
        k = rng.integers(1, 3)
        labels.append([f"l{j}" for j in rng.choice(n_labels, size=k, replace=False)])
    for r, name in enumerate(rare):
        for i in (3 * r + 1, n - 3 * r - 2):
            labels[i] = labels[i] + [name]
    for i in empty:
        labels[i] = []
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "image": [f"images/{i}.png" for i in range(n)],
                          "labels": labels})
    users = rng.integers(0, 50, size=10 * n)
    its = rng.integers(0, n, size=10 * n)
    inter = pd.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in its]})
    return load_folder(write_dataset(root, items, inter, name="t", source="test"))


def test_default_sizes_disjoint_and_cover(tmp_path):
    ds = _dataset(tmp_path / "d", n=200)
    s = make_split(ds)
    assert (len(s.train), len(s.val), len(s.test)) == (140, 30, 30)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert len(np.unique(allidx)) == 200 == len(allidx)
    for a in (s.train, s.val, s.test):
        assert (np.diff(a) > 0).all()  # sorted
    assert s.labelled.all() and (s.train_labelled == s.train).all()


def test_seeded_determinism(tmp_path):
    ds = _dataset(tmp_path / "d")
    a = make_split(ds, SplitConfig(seed=7, label_ratio=0.3))
    b = make_split(ds, SplitConfig(seed=7, label_ratio=0.3))
    c = make_split(ds, SplitConfig(seed=8, label_ratio=0.3))
    for f in ("train", "val", "test", "labelled"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.train, c.train)


@pytest.mark.parametrize("seed", range(8))
def test_every_label_with_two_items_is_in_train(tmp_path, seed):
    ds = _dataset(tmp_path / "d", n=60, rare=("rareA", "rareB", "rareC"), seed=seed)
    s = make_split(ds, SplitConfig(seed=seed))
    y = ds.label_matrix
    counts = y.sum(0)
    in_train = y[s.train].sum(0)
    assert (in_train[counts >= 2] >= 1).all()
    # the adjustment moves at most one item per rare label
    assert abs(len(s.train) - 42) <= 3


def test_label_ratio_hides_a_seeded_fraction_of_train_labels(tmp_path):
    ds = _dataset(tmp_path / "d", n=400)
    s = make_split(ds, SplitConfig(seed=1, label_ratio=0.1))
    assert s.labelled[s.val].all() and s.labelled[s.test].all()
    assert s.labelled[s.train].sum() == round(0.1 * len(s.train))
    assert set(s.train_labelled) <= set(s.train)
    full = make_split(ds, SplitConfig(seed=1))
    np.testing.assert_array_equal(full.train, s.train)  # the ratio changes labels, not the split
    assert make_split(ds, SplitConfig(seed=1, label_ratio=0.001)).labelled[s.train].sum() == 1


def test_cf_phase_sees_only_train_interactions(tmp_path):
    ds = _dataset(tmp_path / "d")
    s = make_split(ds)
    np.testing.assert_array_equal(s.cf_items, s.train)
    m = ds.interaction_matrix(s.cf_items)
    per_item = np.asarray(m.sum(0)).ravel()
    assert per_item[s.val].sum() == 0 and per_item[s.test].sum() == 0
    full = ds.interaction_matrix()
    assert (m[:, s.train] != full[:, s.train]).nnz == 0
    assert m.shape == full.shape


def test_items_without_labels_are_allowed_but_not_a_dataset_without_any(tmp_path):
    ds = _dataset(tmp_path / "d", n=30, empty=(0, 1, 2))
    s = make_split(ds)
    assert len(s.train) + len(s.val) + len(s.test) == 30
    none = _dataset(tmp_path / "e", n=10, empty=range(10))
    with pytest.raises(DatasetError, match="no labels"):
        make_split(none)
    with pytest.raises(DatasetError, match="at least 3"):
        make_split(_dataset(tmp_path / "f", n=2))


def test_bad_split_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="label_ratio"):
        SplitConfig(label_ratio=0.0)
    with pytest.raises(ConfigError, match="sum to 1"):
        SplitConfig(train=0.8, val=0.15, test=0.15)


def test_kfold_every_item_tested_once_and_rare_labels_spread(tmp_path):
    from raysearch.data.splits import kfold_assignment, make_fold_split

    ds = _dataset(tmp_path, n=200, rare=("r0", "r1"))
    a = kfold_assignment(ds, 5, seed=3)
    assert np.array_equal(a, kfold_assignment(ds, 5, seed=3))
    assert not np.array_equal(a, kfold_assignment(ds, 5, seed=4))
    assert np.bincount(a).min() >= 35 and np.bincount(a).max() <= 45
    y = ds.label_matrix > 0
    for j in range(y.shape[1]):  # stratified: each label spread over the folds
        counts = np.bincount(a[y[:, j]], minlength=5)
        assert counts.max() - counts.min() <= max(2, counts.sum() // 10), (j, counts)
    tests = []
    for f in range(5):
        s = make_fold_split(ds, 5, f, seed=3, label_ratio=0.5, label_seed=1)
        parts = [s.train, s.val, s.test]
        assert sum(map(len, parts)) == ds.n_items and len(np.unique(np.concatenate(parts))) == ds.n_items
        assert np.array_equal(s.cf_items, s.train) and not np.isin(s.test, s.cf_items).any()
        assert len(s.val) == 30
        tests.append(s.test)
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(ds.n_items))


def test_kfold_label_masks_nested_across_ratios_and_seeded(tmp_path):
    from raysearch.data.splits import make_fold_split

    ds = _dataset(tmp_path)
    full = make_fold_split(ds, 4, 1, seed=0)
    assert full.labelled.all()
    m10 = make_fold_split(ds, 4, 1, seed=0, label_ratio=0.1, label_seed=2)
    m50 = make_fold_split(ds, 4, 1, seed=0, label_ratio=0.5, label_seed=2)
    assert np.array_equal(m10.train, m50.train) and np.array_equal(m10.val, full.val)
    assert (m10.labelled <= m50.labelled).all()  # the 10% labels are a subset of the 50%
    assert len(m10.train_labelled) == round(0.1 * len(m10.train))
    assert np.array_equal(m10.labelled, make_fold_split(ds, 4, 1, seed=0, label_ratio=0.1, label_seed=2).labelled)
    assert not np.array_equal(m10.labelled, make_fold_split(ds, 4, 1, seed=0, label_ratio=0.1, label_seed=3).labelled)
    with pytest.raises(DatasetError, match="folds"):
        make_fold_split(ds, 1, 0)
    with pytest.raises(DatasetError, match="out of range"):
        make_fold_split(ds, 4, 4)
