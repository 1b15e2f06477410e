"""CF phase: Cornac item vectors, the Parquet cache, the AUC check and bad input."""
from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from raysearch.cf import CF_MODELS, CFError, auc_table, compute_item_vectors, read_item_vectors
from raysearch.cf.cornac_data import to_cornac
from raysearch.cf.models.vaecf.vae import BiasedVAE
from raysearch.cli import app
from raysearch.config import CFConfig, ConfigError, SplitConfig, from_dict
from raysearch.data import load_dataset, make_split, write_dataset
from raysearch.registry import UnknownNameError

torch.set_num_threads(1)

FAST = dict(epochs=20, dim=16, hidden=(32,), batch_size=32)


@pytest.fixture(scope="module")
def tiny():
    ds = load_dataset("synthetic-tiny")
    return ds, make_split(ds, SplitConfig(seed=0))


@pytest.fixture(scope="module")
def small():
    ds = load_dataset("synthetic")
    return ds, make_split(ds, SplitConfig(seed=0))


def test_vectors_aligned_to_dataset_items(tiny):
    ds, split = tiny
    iv = compute_item_vectors(ds, split, CFConfig(**FAST), use_cache=False)
    n = ds.n_items
    assert iv.vectors.shape == (n, 16) and iv.vectors.dtype == np.float32
    assert iv.bias.shape == (n,) and iv.bias.dtype == np.float32
    assert iv.targets().shape == (n, 17) and iv.targets().dtype == np.float32
    # only train items with interactions have vectors; val/test (new images) are zero
    counts = np.asarray(ds.interaction_matrix(split.train)[:, split.train].sum(0)).ravel()
    expect = np.zeros(n, dtype=bool)
    expect[split.train[counts > 0]] = True
    np.testing.assert_array_equal(iv.has_vector, expect)
    held_out = np.concatenate([split.val, split.test])
    assert not iv.vectors[held_out].any() and not iv.bias[held_out].any()
    assert (np.abs(iv.vectors[iv.has_vector]).sum(1) > 0).all()
    np.testing.assert_array_equal(iv.n_interactions[split.train], counts)
    assert iv.n_interactions[held_out].sum() == 0
    assert iv.n_interactions.dtype == np.int64


def test_vaecf_item_vectors_are_the_decoder_output_layer(tiny):
    ds, split = tiny
    cfg = CFConfig(**FAST)
    model = CF_MODELS.get("vaecf")(cfg)
    data = to_cornac(ds.interaction_matrix(split.cf_items), seed=0)
    model.fit(data)
    rec = model.recommender
    assert isinstance(rec.vae, BiasedVAE)
    vec, bias = model.item_vectors()
    np.testing.assert_array_equal(vec, rec.vae.decoder.fc0.weight.detach().numpy())
    assert vec.shape == (data.n_items, cfg.dim) and bias.shape == (data.n_items,)
    assert np.abs(bias).max() > 0  # the bias was trained
    # Cornac's score() (reads r_mat) still works and goes through our decoder: softmax(z q^T + b)
    s = rec.score(0)
    assert s.shape == (data.n_items,) and np.isfinite(s).all() and abs(s.sum() - 1) < 1e-4
    x = torch.tensor(rec.r_mat[0].toarray(), dtype=torch.float32)
    with torch.no_grad():
        mu, _ = rec.vae.encode(x)
        manual = torch.softmax(mu @ rec.vae.decoder.fc0.weight.T + rec.vae.decoder.item_bias.bias, 1)
    np.testing.assert_allclose(s, manual.numpy().ravel(), rtol=1e-5, atol=1e-7)


def test_vaecf_without_bias(tiny):
    ds, split = tiny
    iv = compute_item_vectors(ds, split, CFConfig(bias=False, **FAST), use_cache=False)
    assert iv.bias is None and iv.targets().shape == (ds.n_items, 16)


@pytest.mark.parametrize("name", ["bpr", "gmf", "bivaecf"])
def test_other_cornac_models_give_fixed_size_vectors(tiny, name):
    ds, split = tiny
    cfg = CFConfig(model=name, epochs=3 if name == "gmf" else 10, dim=8, hidden=(16,), lr=0.01)
    iv = compute_item_vectors(ds, split, cfg, use_cache=False)
    assert iv.vectors.shape == (ds.n_items, 8)
    assert np.isfinite(iv.vectors).all() and (np.abs(iv.vectors[iv.has_vector]).sum(1) > 0).all()
    assert (iv.bias is not None) == (name == "bpr")


def test_vaecf_auc_beats_most_popular(small):
    ds, split = small
    rows = auc_table(ds, split, [CFConfig(epochs=60, dim=32, hidden=(64,), batch_size=64)], seed=0)
    auc = {r.model: r.auc for r in rows}
    assert set(auc) == {"vaecf", "mostpop"}
    assert 0.5 < auc["mostpop"] < auc["vaecf"] - 0.05, auc


def test_cache_hit_trains_nothing_and_any_change_misses(tiny, home):
    ds, split = tiny
    cfg = CFConfig(**FAST)
    first = compute_item_vectors(ds, split, cfg)
    assert not first.from_cache and first.path is not None and first.path.is_file()
    assert first.path.parent == home / "cache" / "cf"
    again = compute_item_vectors(ds, split, cfg)
    assert again.from_cache  # hit: no training
    assert again.key == first.key and again.config == cfg
    np.testing.assert_array_equal(again.vectors, first.vectors)
    np.testing.assert_array_equal(again.bias, first.bias)
    np.testing.assert_array_equal(again.has_vector, first.has_vector)
    np.testing.assert_array_equal(again.n_interactions, first.n_interactions)
    # the file: one row per item, the columns of the contract, the full config in the metadata
    t = pq.read_table(first.path)
    assert {"item_id", "vector", "bias", "n_interactions"} <= set(t.column_names)
    meta = json.loads(t.schema.metadata[b"raysearch.cf"])
    assert meta["config"]["epochs"] == cfg.epochs and meta["fingerprint"] == ds.fingerprint
    # any change of a hyperparameter or of the split is a miss
    keys = {first.key}
    for changed, sp in [(CFConfig(**{**FAST, "epochs": 21}), split), (CFConfig(**{**FAST, "lr": 2e-3}), split),
                        (CFConfig(**FAST, seed=1), split), (cfg, make_split(ds, SplitConfig(seed=1)))]:
        iv = compute_item_vectors(ds, sp, changed)
        assert not iv.from_cache
        keys.add(iv.key)
    assert len(keys) == 5
    # no tmp files left behind by the atomic writes
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".")]


def test_cache_miss_on_changed_data(tiny, tmp_path):
    ds, split = tiny
    cfg = CFConfig(**FAST)
    iv = compute_item_vectors(ds, split, cfg, data_root=tmp_path)
    inter = ds.interactions.iloc[:-1]  # drop one interaction: a new fingerprint
    root = write_dataset(tmp_path / "changed", ds.items, inter, name="changed", source="test", labels=ds.label_names)
    ds2 = load_dataset(str(root))
    iv2 = compute_item_vectors(ds2, make_split(ds2, SplitConfig(seed=0)), cfg, data_root=tmp_path)
    assert not iv2.from_cache and iv2.key != iv.key


def test_corrupt_or_foreign_cache_is_a_clear_error(tiny, tmp_path):
    ds, split = tiny
    cfg = CFConfig(**FAST)
    iv = compute_item_vectors(ds, split, cfg, data_root=tmp_path)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(CFError, match="bad.parquet"):
        read_item_vectors(bad)
    other = load_dataset("synthetic")
    with pytest.raises(CFError, match="fingerprint"):
        read_item_vectors(iv.path, other)


def test_train_item_without_interactions_is_reported(tiny, tmp_path, caplog):
    ds, split = tiny
    lonely = ds.items["item_id"].iat[int(split.train[0])]
    inter = ds.interactions[ds.interactions["item_id"] != lonely]
    root = write_dataset(tmp_path / "lonely", ds.items, inter, name="lonely", source="test", labels=ds.label_names)
    ds2 = load_dataset(str(root))
    split2 = make_split(ds2, SplitConfig(seed=0))
    with caplog.at_level(logging.WARNING, logger="raysearch.cf"):
        iv = compute_item_vectors(ds2, split2, CFConfig(**FAST), use_cache=False)
    i = ds2.item_index[lonely]
    assert i in split2.train and not iv.has_vector[i] and not iv.vectors[i].any() and iv.n_interactions[i] == 0
    assert "have no interactions" in caplog.text and iv.info["n_train_items_without_interactions"] >= 1


def test_empty_matrix_is_a_clear_error(tiny, tmp_path):
    ds, split = tiny
    train_ids = set(ds.items["item_id"].iloc[split.train])
    inter = ds.interactions[~ds.interactions["item_id"].isin(train_ids)]  # only val/test items interacted
    root = write_dataset(tmp_path / "empty", ds.items, inter, name="empty", source="test", labels=ds.label_names)
    ds2 = load_dataset(str(root))
    with pytest.raises(CFError, match="empty"):
        compute_item_vectors(ds2, make_split(ds2, SplitConfig(seed=0)), CFConfig(**FAST), use_cache=False)


def test_unknown_model_and_option_are_named():
    ds = load_dataset("synthetic-tiny")
    with pytest.raises(UnknownNameError, match="choose one of: bivaecf, bpr, gmf, vaecf, wmf"):
        compute_item_vectors(ds, make_split(ds), CFConfig(model="nope"))
    with pytest.raises(ConfigError, match="'latent'"):
        from_dict(CFConfig, {"latent": 3})


def test_wmf_says_why_it_cannot_run_without_tensorflow(tiny):
    pytest.importorskip("cornac")
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow installed: WMF can run")
    ds, split = tiny
    with pytest.raises(CFError, match="TensorFlow"):
        compute_item_vectors(ds, split, CFConfig(model="wmf", **FAST), use_cache=False)


def test_cli_cf_json_and_errors(tmp_path):
    runner = CliRunner()
    args = ["cf", "-d", "synthetic-tiny", "--data-root", str(tmp_path), "--epochs", "10", "--dim", "8",
            "--hidden", "16", "--json"]
    r = runner.invoke(app, args + ["--also", "bpr:lr=0.05,epochs=20"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["cache"] == "miss" and out["dim"] == 8 and out["target_dim"] == 9
    assert [a["model"] for a in out["auc"]] == ["vaecf", "bpr (epochs=20, lr=0.05)", "mostpop"]
    assert all(0 <= a["auc"] <= 1 for a in out["auc"])
    r2 = runner.invoke(app, args + ["--no-eval"])
    assert json.loads(r2.stdout)["cache"] == "hit"
    r = runner.invoke(app, ["cf", "-d", "synthetic-tiny", "--data-root", str(tmp_path), "--model", "nope"])
    assert r.exit_code != 0 and "unknown CF model 'nope'" in r.output
    r = runner.invoke(app, ["cf", "-d", "synthetic-tiny", "--latent", "3"])
    assert r.exit_code != 0 and "--latent" in r.output
    r = runner.invoke(app, ["cf", "-d", "synthetic-tiny", "--also", "bpr:lrr=1"])
    assert r.exit_code != 0 and "'lrr'" in r.output
    r = runner.invoke(app, ["cf", "-d", "synthetic-tiny", "--hidden", "x"])
    assert r.exit_code != 0 and "--hidden" in r.output


# ----------------------------------------------------------------------------- the sparse VAECF trainer

def _tiny_train_set(tiny):
    ds, split = tiny
    return to_cornac(ds.interaction_matrix(split.cf_items), seed=0).train_set


def test_sparse_trainer_is_cornacs_learn_on_sparse_batches(tiny):
    """Same init, seed, batches and loss: Cornac's dense loop and learn_sparse end at the same
    parameters (float rounding apart), and one batch's loss and gradients agree."""
    import copy

    from cornac.models.vaecf.vaecf import learn

    from raysearch.cf.models.vaecf.sparse import SparseRows, learn_sparse, sparse_forward, sparse_loss

    ts = _tiny_train_set(tiny)
    torch.manual_seed(0)
    ours = BiasedVAE(16, [ts.num_items, 32], "tanh", "mult")
    theirs = copy.deepcopy(ours)
    m = ts.matrix.tocsr().astype(np.float32)
    x, xd = SparseRows.of(m, np.arange(20)), torch.tensor(m[:20].toarray())
    torch.manual_seed(1)
    logits, mu, logvar = sparse_forward(ours, x)
    loss = sparse_loss(logits, x, mu, logvar, 0.7)
    loss.backward()
    torch.manual_seed(1)
    p, mu2, logvar2 = theirs(xd)
    ref = theirs.loss(xd, p, mu2, logvar2, 0.7)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)
    ours.zero_grad()
    theirs.zero_grad()
    torch.manual_seed(5)
    log = learn_sparse(ours, ts, 4, 16, 1e-2, 1.0)
    torch.manual_seed(5)
    learn(theirs, ts, 4, 16, 1e-2, 1.0, False)
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)
    assert [h["epoch"] for h in log.history] == [1, 2, 3, 4] and log.best_epoch == 4 and not log.stopped_early


def test_per_user_auc_is_cornacs_auc_with_ties():
    import scipy.sparse as sp
    from cornac.metrics import AUC

    from raysearch.cf.models.vaecf.sparse import per_user_auc

    known = sp.random(30, 50, density=0.2, format="csr", random_state=1)
    held = sp.random(30, 50, density=0.1, format="csr", random_state=2)
    known.data[:], held.data[:] = 1, 1
    held = (held - held.multiply(known)).tocsr()
    held.eliminate_zeros()
    scores = torch.from_numpy(np.random.default_rng(0).integers(0, 5, (30, 50)).astype(np.float32))  # many ties
    got = per_user_auc(scores, known, held)
    ref = []
    for u in range(30):
        pos = held[u].indices
        if len(pos):
            neg = np.setdiff1d(np.arange(50), np.concatenate([pos, known[u].indices]))
            ref.append(AUC().compute(np.arange(50), scores[u].numpy(), pos, neg))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_early_stopping_holds_out_interactions_and_keeps_the_best_epoch(small):
    """patience > 0: a tenth of the users lose 20% of their interactions to a validation set, the
    held-out AUC is logged per epoch, training stops after `patience` epochs without gain and the
    best epoch's weights are what the model ends with."""
    from raysearch.cf.models.vaecf.sparse import heldout_auc, hold_out

    ds, split = small
    data = to_cornac(ds.interaction_matrix(split.cf_items), seed=0)
    model = CF_MODELS.get("vaecf")(CFConfig(epochs=200, dim=16, hidden=(32,), batch_size=128, lr=0.03, patience=2))
    model.fit(data)
    log = model.recommender.train_log
    n_users = data.n_users
    assert log.val_users == n_users // 10 and log.val_interactions > 0
    aucs = [h["val_auc"] for h in log.history]
    assert len(aucs) == len(log.history) and 0.5 < max(aucs) <= 1
    assert log.stopped_early and len(aucs) < 200
    assert log.best_epoch == 1 + int(np.argmax(aucs)) and len(aucs) - log.best_epoch == 2
    m = data.train_set.matrix.tocsr().astype(np.float32)
    m.data[:] = 1
    train, held, users = hold_out(m, n_users // 10, 0.2, 0)
    assert held.nnz == log.val_interactions and train.nnz + held.nnz == m.nnz
    assert heldout_auc(model.recommender.vae, train, held, users) == pytest.approx(max(aucs), abs=1e-6)


def test_vaecf_trainer_options_are_checked(tiny):
    with pytest.raises(ConfigError, match="cf.trainer"):
        CFConfig(trainer="keras")
    with pytest.raises(ConfigError, match="cf.patience"):
        CFConfig(patience=-1)
    ds, split = tiny
    with pytest.raises(CFError, match="needs cf.trainer sparse"):
        compute_item_vectors(ds, split, CFConfig(trainer="cornac", patience=2, **FAST), use_cache=False)
    # Cornac's own loop stays available and gives the same vectors up to float rounding
    a = compute_item_vectors(ds, split, CFConfig(trainer="cornac", **FAST), use_cache=False)
    b = compute_item_vectors(ds, split, CFConfig(**FAST), use_cache=False)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-4)
