"""raysearch experiment: paired units, fold isolation of CF, paired bootstrap, outputs, --json."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from raysearch.config import RunConfig, TrainConfig, CFConfig, to_dict
from raysearch.experiment.protocol import ExperimentContext, parse_variants, unit_data
from raysearch.experiment.stats import holm, paired_item_bootstrap, paired_unit_tests

torch.set_num_threads(1)

TINY = {"dataset": "synthetic-tiny",
        "train": {"backbone": "tiny_cnn", "weights": "none", "image_size": 32, "epochs": 2, "batch_size": 32, "patience": 2},
        "cf": {"model": "vaecf", "epochs": 3, "dim": 8, "hidden": [16]}}


def _ctx(tmp_path, variants):
    base = RunConfig(dataset="synthetic-tiny", train=TrainConfig(backbone="tiny_cnn", weights="none", image_size=32),
                     cf=CFConfig(epochs=3, dim=8, hidden=(16,)))
    runs = {}
    for v in variants:
        src = v.shuffled_from or v.name
        runs[v.name] = to_dict(base) | {"train": to_dict(base.train) | {"method": v.method, "weighting": v.weighting}}
        assert src in runs or v.shuffled_from
    return ExperimentContext(runs=runs, variants={v.name: v for v in variants}, folds=3, split_seed=0, val=0.15,
                             cpus_per_trial=1, lock_dir=str(tmp_path))


def test_parse_variants_reference_first_and_control():
    vs = parse_variants(["mtl:loss", "contrastive", "image_only", "sequential"], shuffle_control=True)
    assert [v.name for v in vs] == ["image_only", "mtl:loss", "contrastive", "sequential:uniform", "mtl:loss+shuffled-cf"]
    assert vs[-1].shuffled_from == "mtl:loss" and vs[-1].weighting == "loss"
    assert parse_variants(["mtl"])[0].name == "image_only"  # the reference is always there
    with pytest.raises(Exception, match="weighting"):
        parse_variants(["mtl:sqrt"])
    with pytest.raises(Exception, match="no weighting"):
        parse_variants(["image_only:loss"])


def test_units_are_paired_and_cf_never_sees_the_test_fold(tmp_path):
    """Same split, label mask and seed for every variant of a unit; the fold's CF is trained on its
    train items only (test items have no vector, no interactions counted, and the vectors' cache key
    is the fold's train item set); the shuffled control differs only in which item gets which vector."""
    from raysearch.cf.vectors import split_hash

    vs = parse_variants(["image_only", "mtl:uniform", "mtl:interaction"], shuffle_control=True)
    ctx = _ctx(tmp_path, vs)
    tests = []
    for fold in range(3):
        datas = {v.name: unit_data(ctx, v.name, fold, seed=1, label_ratio=0.5)[1] for v in vs}
        ref = datas["image_only"].split
        for name, d in datas.items():
            s = d.split
            assert all(np.array_equal(getattr(s, k), getattr(ref, k)) for k in ("train", "val", "test", "labelled")), name
            assert not d.has_cf[s.test].any() and not d.has_cf[s.val].any()
            assert (d.n_interactions[s.test] == 0).all() and (d.weights[s.test] == 0).all()
        assert 0.45 < ref.labelled[ref.train].mean() < 0.55
        uni, shuf = datas["mtl:uniform"], datas["mtl:uniform+shuffled-cf"]
        assert not np.array_equal(uni.cf_targets[uni.has_cf], shuf.cf_targets[shuf.has_cf])
        assert np.allclose(np.sort(uni.cf_targets[uni.has_cf], 0), np.sort(shuf.cf_targets[shuf.has_cf], 0))
        from raysearch.cf import compute_item_vectors
        from raysearch.data import load_dataset

        iv = compute_item_vectors(load_dataset("synthetic-tiny"), ref, CFConfig(epochs=3, dim=8, hidden=(16,)))
        assert iv.info["train_items"] == split_hash(ref) and iv.info["n_train_items"] == len(ref.train)
        tests.append(ref.test)
    # every item is a test item exactly once; another seed keeps the folds but draws another label mask
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(150))
    other = unit_data(ctx, "image_only", 0, seed=2, label_ratio=0.5)[1].split
    first = unit_data(ctx, "image_only", 0, seed=1, label_ratio=0.5)[1].split
    assert np.array_equal(other.test, first.test) and not np.array_equal(other.labelled, first.labelled)


def test_bootstrap_same_resamples_for_every_variant():
    """A variant compared with itself: difference exactly 0, CI [0, 0], p = 1 (any resample that
    differed between variants would make the difference non-zero)."""
    rng = np.random.default_rng(0)
    y = (rng.random((80, 5)) < 0.3).astype(np.int8)
    a = [rng.random((80, 5)) for _ in range(2)]
    better = [s + 0.8 * y for s in a]
    res = paired_item_bootstrap(y, {"image_only": a, "same": [s.copy() for s in a], "better": better},
                                "image_only", n_boot=200, seed=1)
    assert res.diff["same"] == 0.0 and res.diff_low["same"] == 0.0 and res.diff_high["same"] == 0.0
    assert res.p_value["same"] == 1.0
    assert res.diff["better"] > 0.1 and res.diff_low["better"] > 0 and res.p_value["better"] < 0.01
    assert paired_unit_tests(np.array([0.3, 0.31, 0.29]), np.array([0.3, 0.31, 0.29])) == (1.0, 1.0)


def test_holm_matches_hand_computation():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])


@pytest.mark.timeout(420)
def test_experiment_command_outputs_json_resume_and_dashboard(tmp_path, ray_session):
    from typer.testing import CliRunner

    from raysearch.cli import app

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "exp"
    args = ["experiment", "--dataset", "synthetic-tiny", "--config", str(cfg), "--variants", "image_only,mtl:uniform",
            "--folds", "2", "--seeds", "2", "--label-ratios", "0.5", "--shuffle-control", "--n-boot", "100",
            "--out", str(out), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # --json: the summary and nothing else on stdout
    rows = {s["variant"]: s for s in doc["summary"]}
    assert set(rows) == {"image_only", "mtl:uniform", "mtl:uniform+shuffled-cf"} and doc["failed_units"] == 0
    assert rows["mtl:uniform"]["units"] == 4 and 0 <= rows["mtl:uniform"]["p_ttest"] <= 1
    assert rows["mtl:uniform+shuffled-cf"]["control_of"] == "mtl:uniform"

    units = pd.read_parquet(out / "experiment.parquet")
    assert len(units) == 3 * 2 * 2 and (units["stop_reason"] != "error").all()
    # paired: per (fold, seed) every variant had the same test and labelled-train sizes
    assert (units.groupby(["fold", "seed"])[["n_test", "n_train_labelled"]].nunique() == 1).all().all()
    assert units.groupby("variant")["n_test"].sum().eq(150 * 2).all()  # each item tested once per seed
    assert len(units["per_class_ap"].iloc[0]) == 5
    for f in ("summary.parquet", "summary.md", "report.html", "fig_map_by_variant.png", "fig_map_vs_label_ratio.png",
              "fig_gain_vs_class_size.png"):
        assert (out / f).is_file(), f
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 3 and "<table>" in page and 'src="fig_' not in page
    assert "p t (Holm)" in (out / "summary.md").read_text()

    # resume of a finished experiment re-runs nothing and reproduces the summary
    r2 = CliRunner().invoke(app, ["experiment", "--dataset", "synthetic-tiny", "--out", str(out), "--resume", "--json"])
    assert r2.exit_code == 0, r2.output
    again = {s["variant"]: s for s in json.loads(r2.stdout)["summary"]}
    assert again["mtl:uniform"]["mean_test_map"] == rows["mtl:uniform"]["mean_test_map"]
    # an existing experiment is never overwritten silently
    r3 = CliRunner().invoke(app, args)
    assert r3.exit_code != 0 and "already holds an experiment" in r3.output

    r4 = CliRunner().invoke(app, ["dashboard", str(out), "--json"])
    assert r4.exit_code == 0, r4.output
    dash = json.loads(r4.stdout)
    assert dash["kind"] == "experiment" and (out / "dashboard.png").is_file()
    assert "95% CI" in (out / "dashboard.md").read_text()


def test_from_sweep_each_variant_gets_its_own_groups_best_finished_trial(tmp_path):
    from raysearch.experiment.protocol import ExperimentConfig, resolve_configs
    from raysearch.search.results import write_results

    rows = []
    spec = [("mtl", "uniform", 0.5, 0.41, "completed"), ("mtl", "uniform", 2.0, 0.60, "asha_stopped"),
            ("mtl", "loss", 4.0, 0.47, "early_stopped"), ("mtl", "loss", 1.0, 0.45, "completed"),
            ("image_only", "uniform", 0.0, 0.44, "completed")]
    for i, (m, w, a, v, r) in enumerate(spec):
        run = RunConfig(dataset="synthetic-tiny", train=TrainConfig(method=m, weighting=w, alpha=a, lr=1e-3 * (i + 1)))
        rows.append({"trial_id": f"t{i}", "method": m, "weighting": w, "best_val_map": v, "test_map": 0.4,
                     "epochs_run": 3, "stop_reason": r, "wall_time_s": 1.0, "train_time_s": 1.0,
                     "config": json.dumps(to_dict(run))})
    write_results(pd.DataFrame(rows), tmp_path)
    cfg = ExperimentConfig(dataset="synthetic-tiny", from_sweep=(str(tmp_path),), variants=("mtl:uniform", "mtl:loss"))
    runs, src = resolve_configs(cfg, parse_variants(cfg.variants, shuffle_control=True))
    assert runs["mtl:uniform"].train.alpha == 0.5  # the ASHA-stopped trial's higher val mAP is not a finished result
    assert runs["mtl:loss"].train.alpha == 4.0 and runs["image_only"].train.lr == pytest.approx(5e-3)
    assert runs["mtl:uniform+shuffled-cf"] == runs["mtl:uniform"] and "t0" in src["mtl:uniform"]
    bad = ExperimentConfig(dataset="synthetic-tiny", from_sweep=(str(tmp_path),), variants=("mtl:interaction",))
    with pytest.raises(Exception, match="no finished trial of mtl with weighting interaction"):
        resolve_configs(bad, parse_variants(bad.variants))


def test_summarize_partial_run_uses_only_complete_pairs():
    """--report-only on an interrupted run: unit tests on the units every variant finished, the
    bootstrap on the items every variant scored; nothing padded."""
    from raysearch.experiment.protocol import pred_key
    from raysearch.experiment.report import summarize

    rng = np.random.default_rng(0)
    y = (rng.random((60, 3)) < 0.3).astype(np.int8)
    vs = parse_variants(["image_only", "mtl:uniform"])
    rows, preds = [], {"y_true": y}
    for v in vs:
        for seed in (0, 1):
            full = np.full((60, 3), np.nan, np.float32)
            for fold in (0, 1, 2):
                if v.name == "mtl:uniform" and seed == 1 and fold == 2:
                    continue  # not run yet
                full[fold::3] = rng.random((20, 3)) + (0.5 * y[fold::3] if v.name != "image_only" else 0)
                rows.append({"variant": v.name, "label_ratio": 1.0, "fold": fold, "seed": seed,
                             "test_map": float(rng.random()), "stop_reason": "completed"})
            preds[pred_key(1.0, v.name, seed)] = full
    df, per_class = summarize(pd.DataFrame(rows), preds, vs, n_boot=100)
    m = df.set_index("variant").loc["mtl:uniform"]
    assert m["units"] == 5 and m["boot_items"] == 40 and m["seeds_pooled"] == 2
    assert m["diff_ci_low"] > 0 and 1.0 in per_class
