"""Conformance suites, one per plugin kind (in the spirit of ``optuna.testing``): every registered CF
model, backbone, method and weighting scheme runs through the same contracts, parametrized over
``REGISTRY.names()`` at collection time, so a new plugin gets these tests by registering.

* CF models (``CF_MODELS``): fit on a small generated user-item matrix -> item vectors (n_items, dim)
  float32 and finite, a bias exactly when the model has one; same seed -> identical vectors, another
  seed -> other vectors; the Parquet vector file round-trips them exactly.
* Backbones (``BACKBONES``, random init): (N, feature_dim) finite features of a 32 px batch; same
  torch seed -> identical weights and features; a saved state dict loaded by ``create_backbone(name,
  PATH)`` gives identical features.
* Methods (``METHODS``): a 2-epoch fit on ``synthetic-tiny`` gives a finite test mAP in [0, 1] and
  scores in [0, 1]; same seed -> bit-identical test scores; ``save_model`` / ``load_model`` scores the
  test images as the fit did.
* Weighting schemes (``WEIGHTINGS``): float32 (n_items,), finite, >= 0, 0 exactly where there is no CF
  vector; same seed -> identical weights; the weights cache returns them exactly.

A plugin that needs an optional dependency that is not installed (Cornac's TensorFlow WMF) is skipped
with that reason, and only for that reason.  ``CASES`` is the plugins x contracts count, checked
against what pytest collected by :func:`test_every_registered_plugin_runs_every_contract`.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from raysearch.cf import CF_MODELS, WEIGHTINGS
from raysearch.cf.base import CFError
from raysearch.model.backbones import BACKBONES, create_backbone
from raysearch.train.methods import METHODS

torch.set_num_threads(1)

CONTRACTS = {
    "cf": ("fit_shapes", "determinism", "save_load"),
    "backbone": ("fit_shapes", "determinism", "save_load"),
    "method": ("fit_shapes", "determinism", "save_load"),
    "weighting": ("fit_shapes", "determinism", "save_load"),
}
REGISTRIES = {"cf": CF_MODELS, "backbone": BACKBONES, "method": METHODS, "weighting": WEIGHTINGS}
#: plugins x contracts, from the registries at collection time
CASES = sum(len(REGISTRIES[k].names()) * len(c) for k, c in CONTRACTS.items())


def _ids(kind: str):
    return pytest.mark.parametrize("name", REGISTRIES[kind].names())


# ----------------------------------------------------------------------------- CF models

def _interactions(n_users: int = 60, n_items: int = 40, density: float = 0.15, seed: int = 0) -> sp.csr_matrix:
    """Binary users x items matrix where every user and every item has at least one interaction."""
    rng = np.random.default_rng(seed)
    m = rng.random((n_users, n_items)) < density
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    m[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    return sp.csr_matrix(m.astype(np.float32))


def _cf_config(name: str, seed: int = 0):
    from raysearch.config import CFConfig

    return CFConfig(model=name, dim=8, hidden=(16,), epochs=3, batch_size=32, lr=0.01, seed=seed)


def _cf_fit(name: str, seed: int):
    """(model, vectors, bias) of ``name`` fitted on the generated matrix; optional deps missing: skip."""
    from raysearch.cf.cornac_data import to_cornac

    cfg = _cf_config(name, seed)
    data = to_cornac(_interactions(), seed=seed)
    model = CF_MODELS.get(name)(cfg)
    try:
        model.fit(data)
    except CFError as e:
        if "not installed" in str(e):
            pytest.skip(f"CF model {name!r}: {e}")
        raise
    vec, bias = model.item_vectors()
    return model, data, vec, bias


_cf_fit_once = functools.lru_cache(maxsize=None)(_cf_fit)


@_ids("cf")
def test_cf_fit_shapes(name):
    model, data, vec, bias = _cf_fit_once(name, 0)
    assert model.name == name and data.n_items == 40
    assert vec.shape == (data.n_items, 8) and vec.dtype == np.float32 and np.isfinite(vec).all()
    assert (np.abs(vec).sum(1) > 0).all()  # every item has a learned (non-zero) vector
    assert (bias is not None) == model.has_bias, "item_vectors' bias must match the class' has_bias"
    if bias is not None:
        assert bias.shape == (data.n_items,) and np.isfinite(bias).all()


@_ids("cf")
def test_cf_determinism(name):
    _, _, vec, bias = _cf_fit_once(name, 0)
    _, _, again, again_bias = _cf_fit(name, 0)  # a second, independent fit with the same seed
    np.testing.assert_array_equal(again, vec)
    if bias is not None:
        np.testing.assert_array_equal(again_bias, bias)
    _, _, other, _ = _cf_fit(name, 1)
    assert not np.array_equal(other, vec), "cfg.seed must reach the model: another seed gave the same vectors"


@_ids("cf")
def test_cf_save_load(name, tmp_path):
    from raysearch.cf.vectors import ItemVectors, read_item_vectors, write_item_vectors

    model, data, vec, bias = _cf_fit_once(name, 0)
    n = data.n_items
    iv = ItemVectors(vectors=vec, bias=bias, has_vector=np.ones(n, bool), n_interactions=np.arange(n, dtype=np.int64),
                     config=model.cfg, key=f"{name}-conformance", item_ids=[f"i{k}" for k in range(n)])
    write_item_vectors(iv, tmp_path / "v.parquet")
    back = read_item_vectors(tmp_path / "v.parquet")
    np.testing.assert_array_equal(back.vectors, vec)
    assert back.vectors.dtype == np.float32 and back.config == model.cfg and back.item_ids == iv.item_ids
    if bias is None:
        assert back.bias is None
    else:
        np.testing.assert_array_equal(back.bias, bias)


# ----------------------------------------------------------------------------- backbones

def _backbone(name: str, seed: int = 0, weights: str = "none"):
    torch.manual_seed(seed)
    return create_backbone(name, weights).eval()


def _batch() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@_ids("backbone")
def test_backbone_fit_shapes(name):
    bb = _backbone(name)
    with torch.no_grad():
        f = bb(_batch())
    assert bb.name == name and f.shape == (2, bb.feature_dim) and f.dtype == torch.float32
    assert torch.isfinite(f).all()
    assert 1 <= bb.default_trainable_blocks <= bb.n_blocks


@_ids("backbone")
def test_backbone_determinism(name):
    a, b = _backbone(name, 0), _backbone(name, 0)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = _batch()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    c = _backbone(name, 1)
    assert not all(torch.equal(sa[k], v) for k, v in c.state_dict().items()), "torch's seed must set the init"


@_ids("backbone")
@torch.no_grad()
def test_backbone_save_load(name, tmp_path):
    a = _backbone(name, 0)
    x = _batch()
    a.train()
    a(x)  # move BatchNorm running statistics off their init, so the round trip has to carry them
    a.eval()
    torch.save(a.state_dict(), tmp_path / "w.pt")
    b = _backbone(name, 1, weights=str(tmp_path / "w.pt"))  # another init, then the saved weights
    assert torch.equal(a(x), b(x))


# ----------------------------------------------------------------------------- methods

def _method_run(name: str):
    from raysearch.config import RunConfig, from_dict

    return from_dict(RunConfig, {
        "dataset": "synthetic-tiny", "split": {"seed": 1},
        "train": {"method": name, "weighting": "uniform", "backbone": "tiny_cnn", "weights": "none", "image_size": 16,
                  "epochs": 2, "batch_size": 32, "patience": 20, "device": "cpu", "aux_epochs": 1, "seed": 3},
        "cf": {"model": "bpr", "epochs": 3, "dim": 8}})


@functools.lru_cache(maxsize=None)
def _method_data(name: str):
    from raysearch.train import prepare_training_data

    return prepare_training_data(_method_run(name))


def _method_fit(name: str):
    from raysearch.train import fit

    return fit(_method_run(name), _method_data(name), progress=False)


_method_fit_once = functools.lru_cache(maxsize=None)(_method_fit)


@_ids("method")
def test_method_fit_shapes(name):
    r, data = _method_fit_once(name), _method_data(name)
    assert 0.0 <= r.test_map <= 1.0 and np.isfinite(r.test_map)
    assert np.isfinite(r.best_val_map) and 1 <= r.epochs_run <= 2
    s = r.test_scores
    assert s.shape == (len(data.split.test), len(data.label_names)) and np.isfinite(s).all()
    assert (s >= 0).all() and (s <= 1).all()
    assert data.cf_targets is not None if METHODS.get(name).uses_cf else data.cf_targets is None


@_ids("method")
def test_method_determinism(name):
    a, b = _method_fit_once(name), _method_fit(name)
    assert a.test_scores.tobytes() == b.test_scores.tobytes() and a.test_map == b.test_map


@_ids("method")
def test_method_save_load(name, tmp_path):
    from raysearch.model.io import load_model, save_model

    r, data = _method_fit_once(name), _method_data(name)
    m = load_model(save_model(tmp_path / "m", r.best_state, _method_run(name), data, r))
    assert m.info.backbone == "tiny_cnn" and m.info.label_names == list(data.label_names)
    assert m.info.test_map == pytest.approx(r.test_map)
    np.testing.assert_allclose(m.scores(data.images[data.split.test]), r.test_scores, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- weighting schemes

@functools.lru_cache(maxsize=None)
def _weight_world():
    """synthetic-tiny, a half-labelled split and cached (so ``iv.path`` is set) BPR item vectors."""
    from raysearch.cf import compute_item_vectors
    from raysearch.config import SplitConfig
    from raysearch.data import load_dataset, make_split

    ds = load_dataset("synthetic-tiny")
    split = make_split(ds, SplitConfig(seed=0, label_ratio=0.5))
    return ds, split, compute_item_vectors(ds, split, _cf_config("bpr"))


def _cf2label():
    from raysearch.cf import CF2LabelConfig

    return CF2LabelConfig(hidden=8, epochs=20, folds=2)


def _weights(name: str, seed: int = 0) -> np.ndarray:
    ds, split, iv = _weight_world()
    return WEIGHTINGS.get(name)(ds, split, iv, seed, _cf2label())  # the registered function itself


@_ids("weighting")
def test_weighting_fit_shapes(name):
    ds, _, iv = _weight_world()
    w = _weights(name)
    assert isinstance(w, np.ndarray) and w.shape == (ds.n_items,) and w.dtype == np.float32
    assert np.isfinite(w).all() and (w >= 0).all()
    assert (w[iv.has_vector] > 0).all() and (w[~iv.has_vector] == 0).all()


@_ids("weighting")
def test_weighting_determinism(name):
    np.testing.assert_array_equal(_weights(name, 0), _weights(name, 0))


@_ids("weighting")
def test_weighting_save_load(name):
    from raysearch.cf import item_weights

    ds, split, iv = _weight_world()
    assert iv.path is not None
    first = item_weights(name, ds, split, iv, seed=0, cf2label=_cf2label())  # computed, written beside the vectors
    np.testing.assert_array_equal(first, _weights(name))
    again = item_weights(name, ds, split, iv, seed=0, cf2label=_cf2label())  # read back
    assert again.dtype == np.float32
    np.testing.assert_array_equal(again, first)


# ----------------------------------------------------------------------------- the suite itself

def test_every_registered_plugin_runs_every_contract():
    """Each contract is a test function parametrized over exactly its registry's names (a registered
    plugin cannot be left out of a contract), and ``CASES`` counts them."""
    n = 0
    for kind, contracts in CONTRACTS.items():
        for c in contracts:
            fn = globals()[f"test_{kind}_{c}"]
            marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
            assert [m.args for m in marks] == [("name", REGISTRIES[kind].names())], fn.__name__
            n += len(marks[0].args[1])
    tests = {k for k in globals() if k.startswith("test_") and k.split("_")[1] in CONTRACTS}
    assert tests == {f"test_{k}_{c}" for k, cs in CONTRACTS.items() for c in cs}
    assert n == CASES and all(len(REGISTRIES[k].names()) > 0 for k in CONTRACTS)
