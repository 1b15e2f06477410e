"""CF2Label pre-study: CF vectors predict labels far better than popularity, out of fold."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from raysearch.cf import CF2LabelConfig, CFError, cf2label_study, compute_item_vectors, out_of_fold
from raysearch.cf.cf2label import fold_ids
from raysearch.cli import app
from raysearch.config import CFConfig, SplitConfig
from raysearch.data import load_dataset, make_split

torch.set_num_threads(1)

CF = CFConfig(epochs=60, dim=32, hidden=(64,), batch_size=64)
MLP = CF2LabelConfig(hidden=64, epochs=150)


@pytest.fixture(scope="module")
def world():
    ds = load_dataset("synthetic")
    split = make_split(ds, SplitConfig(seed=0))
    return ds, split, compute_item_vectors(ds, split, CF)


def test_cf2label_beats_popularity(world):
    ds, split, iv = world
    res = cf2label_study(ds, split, iv, MLP)
    assert res["items"] == int((iv.has_vector[split.train] & (ds.label_matrix[split.train].sum(1) > 0)).sum())
    assert res["folds"] == 5
    # popularity scores are constant per class: AP = class prevalence, mAP = mean prevalence
    assert res["popularity_map"] == pytest.approx(ds.label_matrix[split.train].mean(0).mean(), abs=0.02)
    assert res["cf2label_map"] > 2 * res["popularity_map"], res


def test_shuffled_vectors_lose_the_signal(world):
    ds, split, iv = world
    rng = np.random.default_rng(0)
    idx = split.train[iv.has_vector[split.train]]
    orig = iv.vectors.copy()
    try:
        iv.vectors[idx] = iv.vectors[rng.permutation(idx)]
        res = cf2label_study(ds, split, iv, MLP)
    finally:
        iv.vectors[:] = orig
    assert res["cf2label_map"] < res["popularity_map"] * 1.6, res


def test_out_of_fold_predictions_never_see_their_own_labels():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    y = (x[:, :3] > 0).astype(np.float32)
    cfg = CF2LabelConfig(hidden=16, epochs=50, folds=4)
    p1, pop1, ids = out_of_fold(x, y, cfg, seed=3)
    y2 = y.copy()
    y2[0] = 1 - y2[0]  # change item 0's labels: its own prediction must not move
    p2, pop2, _ = out_of_fold(x, y2, cfg, seed=3)
    np.testing.assert_array_equal(p1[0], p2[0])
    np.testing.assert_array_equal(pop1[0], pop2[0])
    other = ids != ids[0]
    assert not np.array_equal(p1[other], p2[other])  # models that did see item 0 changed
    # deterministic given the seed
    np.testing.assert_array_equal(p1, out_of_fold(x, y, cfg, seed=3)[0])
    assert sorted(np.bincount(ids)) == [15, 15, 15, 15]


def test_too_few_items_and_bad_config():
    with pytest.raises(CFError, match="at least 2"):
        fold_ids(1, 5, 0)
    with pytest.raises(CFError, match="folds"):
        CF2LabelConfig(folds=1)


def test_cli_cf2label_json(tmp_path):
    r = CliRunner().invoke(app, ["cf2label", "-d", "synthetic-tiny", "--data-root", str(tmp_path), "--epochs", "30",
                                 "--dim", "8", "--hidden", "16", "--mlp-epochs", "50", "--folds", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["folds"] == 3 and 0 < out["popularity_map"] < 1 and 0 < out["cf2label_map"] <= 1
    assert "out-of-fold" in out["evaluated_on"]
    lw = out["loss_weights"]  # what the loss weighting makes of the vectors on this split
    assert 0 <= lw["fallback_share"] <= 1 and 0.1 - 1e-6 <= lw["min"] <= lw["max"] <= 10 + 1e-6
