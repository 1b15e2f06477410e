"""Built-in synthetic worlds: preset shapes, determinism, generate-once caching, and the
property the method needs (CF-style latent information that pixels carry only weakly)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raysearch.data import DATASETS, DatasetError, dataset_stats, load_dataset, load_folder
from raysearch.data.format import gini
from raysearch.data.synthetic import PRESETS, WorldSpec, assign_labels, build_world, class_sizes, generate

# (n_labels, avg positive labels, Gini) from the paper's Table 2
PAPER = {
    "synthetic-toys": (54, 1.28, 0.58),
    "synthetic-clothing": (199, 3.22, 0.74),
    "synthetic-movielens": (19, 2.03, 0.51),
    "synthetic-pinterest": (32, 1.0, 0.48),
}


@pytest.fixture(scope="module")
def preset_stats(tmp_path_factory):
    out = {}
    for name in PAPER:
        root = build_world(PRESETS[name][0], tmp_path_factory.mktemp(name) / name, name=name)
        ds = load_folder(root, check_images=True)
        out[name] = dataset_stats(ds)
        out[name]["min_item_interactions"] = int(ds.n_interactions_per_item().min())
    return out


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_shaped_presets_match_table2(preset_stats, name):
    n_labels, avg_pos, g = PAPER[name]
    s = preset_stats[name]
    assert s["labels"] == n_labels
    assert s["avg_pos_labels"] == pytest.approx(avg_pos, abs=0.01)
    assert s["gini"] == pytest.approx(g, abs=0.02)
    assert 1_000 <= s["images"] <= 5_000  # fits this machine
    assert s["users"] > 0 and s["interactions"] > 5 * s["images"]
    assert s["min_item_interactions"] >= PRESETS[name][0].min_item_interactions  # k-core-like


def test_presets_keep_the_papers_density_order(preset_stats):
    d = {k: v["sparsity"] for k, v in preset_stats.items()}  # dataset_stats' "sparsity" is the density
    assert d["synthetic-movielens"] > d["synthetic-toys"] > d["synthetic-clothing"] > d["synthetic-pinterest"]


def test_pinterest_lookalike_is_single_label(tmp_path):
    spec = PRESETS["synthetic-pinterest"][0]
    w = generate(spec)
    assert (w.labels.sum(1) == 1).all()


def test_every_preset_is_registered_as_synthetic():
    for name in PRESETS:
        assert DATASETS.get(name).kind == "synthetic"


def test_load_tiny_generates_once_then_loads_from_cache(home):
    folder = home / "datasets" / "synthetic-tiny"
    ds = load_dataset("synthetic-tiny")
    assert folder.is_dir() and ds.root == folder
    s = dataset_stats(ds)
    assert (s["images"], s["labels"]) == (150, 5)
    assert ds.image_path(0).is_file()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source"] == "synthetic" and meta["params"]["spec"]["n_items"] == 150
    stamp = (folder / "items.parquet").stat().st_mtime_ns
    ds2 = load_dataset("synthetic-tiny")
    assert (folder / "items.parquet").stat().st_mtime_ns == stamp  # not regenerated
    assert ds2.fingerprint == ds.fingerprint
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".synthetic-tiny-")]  # no temp left


def test_world_cached_by_an_older_generator_is_regenerated(tmp_path):
    folder = tmp_path / "datasets" / "synthetic-tiny"
    fresh = load_dataset("synthetic-tiny", tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    meta["params"]["render_tag"] = "0ld0ld00"
    (folder / "meta.json").write_text(json.dumps(meta))
    again = load_dataset("synthetic-tiny", tmp_path)
    assert again.meta["params"]["render_tag"] == fresh.meta["params"]["render_tag"] != "0ld0ld00"
    assert again.fingerprint == fresh.fingerprint


def test_same_seed_same_fingerprint_other_seed_differs(tmp_path):
    spec = PRESETS["synthetic-tiny"][0]
    a = load_folder(build_world(spec, tmp_path / "a", name="x"))
    b = load_folder(build_world(spec, tmp_path / "b", name="x"))
    c = load_folder(build_world(WorldSpec(**{**spec.__dict__, "seed": 1}), tmp_path / "c", name="x"))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert (a.image_path(3).read_bytes() == b.image_path(3).read_bytes())


def test_pixel_only_spec_change_changes_fingerprint(tmp_path):
    """Image paths carry a render tag, so a renderer-only change invalidates image caches."""
    spec = PRESETS["synthetic-tiny"][0]
    a = load_folder(build_world(spec, tmp_path / "a", name="x"))
    b = load_folder(build_world(WorldSpec(**{**spec.__dict__, "pixel_noise": 1.0}), tmp_path / "b", name="x"))
    assert (a.items["labels"].tolist() == b.items["labels"].tolist())
    assert a.fingerprint != b.fingerprint


def test_class_sizes_and_assignment_are_exact():
    sizes = class_sizes(500, 20, 2.0, 0.6, 3)
    assert sizes.sum() == 1000 and sizes.min() >= 3 and (np.diff(sizes) <= 0).all()
    assert gini(sizes) == pytest.approx(0.6, abs=0.01)
    rng = np.random.default_rng(0)
    y = assign_labels(rng.standard_normal((500, 20)), sizes)
    assert (y.sum(0) == sizes).all() and (y.sum(1) >= 1).all()


def test_top_k_desc_is_the_full_sorts_prefix():
    """The partial sort that keeps generation linear picks exactly what ``argsort`` did, in its order."""
    from raysearch.data.synthetic import _top_k_desc

    keys = np.random.default_rng(0).gumbel(size=(9, 50))
    full = np.argsort(-keys, axis=1)
    for k in (1, 7, 49, 50, 80):
        assert (_top_k_desc(keys, k) == full[:, :min(k, 50)]).all(), k


def test_generate_is_the_full_sort_world(monkeypatch):
    """Same worlds as the full-sort sampler (seeded; the top-up path included: few users, sparse)."""
    from raysearch.data import synthetic

    specs = [PRESETS["synthetic-tiny"][0], PRESETS["synthetic"][0],
             WorldSpec(n_items=600, n_users=20, n_labels=5, interactions_per_item=2.0, seed=3)]
    fast = [generate(s) for s in specs]
    monkeypatch.setattr(synthetic, "_top_k_desc", lambda keys, k: np.argsort(-keys, axis=1))
    for spec, a in zip(specs, fast):
        b = generate(spec)
        assert (a.interactions == b.interactions).all() and (a.labels == b.labels).all()
        assert len(np.unique(a.interactions, axis=0)) == len(a.interactions)
        assert np.bincount(a.interactions[:, 1], minlength=spec.n_items).min() >= spec.min_item_interactions


def test_bad_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="avg_pos_labels"):
        WorldSpec(n_items=10, n_users=5, n_labels=3, avg_pos_labels=0.5)
    with pytest.raises(ValueError, match="pixel_dims"):
        WorldSpec(n_items=10, n_users=5, n_labels=3, latent_dim=4, pixel_dims=6)


def test_adapter_name_without_data_names_the_lookalike(home):
    # every real-data adapter registers with its synthetic lookalike (a broken registration fails here)
    for real in ("movielens", "toys", "clothing", "pinterest"):
        assert real in DATASETS and f"synthetic-{real}" in DATASETS, DATASETS.names()
        assert DATASETS.get(real).kind != "synthetic" and DATASETS.get(f"synthetic-{real}").kind == "synthetic"
        with pytest.raises(DatasetError, match=f"look-alike 'synthetic-{real}'"):
            load_dataset(real)


def _ridge_r2(x_tr, y_tr, x_te, y_te, lam=1.0):
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    a, b = (x_tr - mu) / sd, (x_te - mu) / sd
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y_tr - y_tr.mean(0)))
    pred = b @ w + y_tr.mean(0)
    return 1 - ((pred - y_te) ** 2).sum() / ((y_te - y_te.mean(0)) ** 2).sum()


def _probe_map(x, y, fit_rows, eval_rows):
    """Macro AP of per-label logistic regressions fitted on ``fit_rows`` (the scarce labels)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    mu, sd = x[fit_rows].mean(0), x[fit_rows].std(0) + 1e-6
    x = (x - mu) / sd
    aps = []
    for j in range(y.shape[1]):
        if 0 < y[fit_rows, j].sum() < len(fit_rows) and y[eval_rows, j].any():
            clf = LogisticRegression(C=1.0, max_iter=2000).fit(x[fit_rows], y[fit_rows, j])
            aps.append(average_precision_score(y[eval_rows, j], clf.decision_function(x[eval_rows])))
    return float(np.mean(aps))


def test_interactions_carry_label_information_that_pixels_carry_weakly():
    """The world's reason to exist, checked with linear probes at label ratio 0.1: item vectors
    from the train-item interaction matrix (a truncated SVD standing in for a CF model) predict
    labels far better than the rendered pixels do, and shuffling them across items destroys that."""
    from raysearch.data.synthetic import render

    spec = PRESETS["synthetic"][0]
    w = generate(spec)
    n = spec.n_items
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    train, test = np.sort(perm[:560]), np.sort(perm[560:])
    labelled = np.sort(rng.choice(train, 56, replace=False))
    unlabelled = np.setdiff1d(train, labelled)
    m = np.zeros((spec.n_users, n))
    m[w.interactions[:, 0], w.interactions[:, 1]] = 1
    m[:, test] = 0  # val/test items' interactions are hidden from the CF phase
    _, s, vt = np.linalg.svd(m - m.mean(0), full_matrices=False)
    k = spec.latent_dim + 2  # a little slack for the popularity direction
    cf = (vt[:k] * s[:k, None]).T
    assert _ridge_r2(cf[labelled], w.z[labelled], cf[unlabelled], w.z[unlabelled]) > 0.6
    pixels = render(w.render_params, spec.image_size, np.random.default_rng(1), spec.clutter)
    pixels = pixels.reshape(n, -1).astype(np.float64)
    y = w.labels
    chance = float(y[unlabelled].mean())
    ap_cf = _probe_map(cf, y, labelled, unlabelled)
    ap_pix = _probe_map(pixels, y, labelled, unlabelled)
    ap_shuffled = _probe_map(cf[rng.permutation(n)], y, labelled, unlabelled)
    print(f"chance {chance:.3f} cf {ap_cf:.3f} pixels {ap_pix:.3f} shuffled cf {ap_shuffled:.3f}")
    assert ap_cf > ap_pix + 0.15, (ap_cf, ap_pix)
    assert ap_pix > chance + 0.03, (ap_pix, chance)  # pixels do carry some label signal
    assert ap_shuffled < chance + 0.05, (ap_shuffled, chance)
