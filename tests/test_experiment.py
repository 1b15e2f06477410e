"""raysearch experiment: paired units, fold isolation of CF, paired bootstrap, outputs, --json."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from raysearch.config import CFConfig, ConfigError, RunConfig, TrainConfig, from_dict, to_dict
from raysearch.experiment.protocol import (ExperimentConfig, arm_run, config_owner, parse_variants, units_grid)
from raysearch.experiment.stats import (corrected_resampled_ttest, fold_level_ttest, holm, paired_item_bootstrap,
                                        paired_unit_tests)

torch.set_num_threads(1)

TINY = {"dataset": "synthetic-tiny",
        "train": {"backbone": "tiny_cnn", "weights": "none", "image_size": 32, "epochs": 2, "batch_size": 32, "patience": 2},
        "cf": {"model": "vaecf", "epochs": 3, "dim": 8, "hidden": [16]}}


BASE = RunConfig(dataset="synthetic-tiny", train=TrainConfig(backbone="tiny_cnn", weights="none", image_size=32),
                 cf=CFConfig(epochs=3, dim=8, hidden=(16,)))


def _grid(variants, same_config=None, folds=3, seeds=2, ratio=0.5):
    """The experiment's units for these arms at one base config (what run_experiment builds)."""
    cfg = ExperimentConfig(dataset="synthetic-tiny", folds=folds, seeds=seeds, label_ratios=(ratio,), same_config=same_config)
    runs = {v.name: arm_run(BASE, v) for v in variants}
    if same_config:  # resolve_configs' rule: every arm of the named arm's method at its configuration
        owner = runs[same_config]
        runs = {v.name: arm_run(owner, v) if config_owner(cfg, v, variants) == same_config else runs[v.name]
                for v in variants}
    return cfg, units_grid(cfg, variants, lambda r, f, v: runs[v.name])


def _data(unit):
    from raysearch.train import prepare_training_data

    return prepare_training_data(from_dict(RunConfig, unit["run"]))


def test_parse_variants_reference_first_and_control():
    vs = parse_variants(["mtl:loss", "contrastive", "image_only", "sequential"], shuffle_control=True)
    assert [v.name for v in vs] == ["image_only", "mtl:loss", "contrastive", "sequential:uniform", "mtl:loss+shuffled-cf"]
    assert vs[-1].shuffled_from == "mtl:loss" and vs[-1].weighting == "loss"
    assert parse_variants(["mtl"])[0].name == "image_only"  # the reference is always there
    with pytest.raises(ConfigError, match=r"^--variants 'mtl:sqrt': unknown weighting scheme 'sqrt'; choose one of"):
        parse_variants(["mtl:sqrt"])
    with pytest.raises(ConfigError, match=r"^--variants 'mlt:uniform': unknown method 'mlt'"):
        parse_variants(["mlt:uniform"])
    with pytest.raises(Exception, match="no weighting"):
        parse_variants(["image_only:loss"])
    for nothing in ([], [""], ["image_only"]):  # image_only alone would run and compare nothing
        with pytest.raises(Exception, match="no arm to compare"):
            parse_variants(nothing)


def test_units_record_the_thread_count_their_trials_train_with():
    """As a sweep's trials do (best.yaml): a unit's config retrains it exactly, thread count included."""
    vs = parse_variants(["image_only", "mtl:uniform"])
    _, grid = _grid(vs)
    assert {u["run"]["train"]["threads"] for u in grid} == {1}  # --cpus-per-trial 1
    cfg = ExperimentConfig(dataset="synthetic-tiny", folds=2, seeds=1, label_ratios=(1.0,), cpus_per_trial=2.0)
    assert {u["run"]["train"]["threads"] for u in units_grid(cfg, vs, lambda r, f, v: arm_run(BASE, v))} == {2}
    # a best.yaml of a sweep run with other CPUs: the units train with the CPUs the experiment reserves
    other = dataclasses.replace(BASE, train=dataclasses.replace(BASE.train, threads=8))
    assert {u["run"]["train"]["threads"] for u in units_grid(cfg, vs, lambda r, f, v: arm_run(other, v))} == {2}


def test_units_are_paired_and_cf_never_sees_the_test_fold(tmp_path):
    """Same split, label mask and seed for every variant of a unit; the fold's CF is trained on its
    train items only (test items have no vector, no interactions counted, and the vectors' cache key
    is the fold's train item set); the shuffled control differs only in which item gets which vector."""
    from raysearch.cf.vectors import split_hash

    vs = parse_variants(["image_only", "mtl:uniform", "mtl:interaction"], shuffle_control=True)
    _, grid = _grid(vs)
    tests = []
    for fold in range(3):
        datas = {u["variant"]: _data(u) for u in grid if u["fold"] == fold and u["seed"] == 1}
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
    first, other = (_data(next(u for u in grid if u["fold"] == 0 and u["seed"] == s and u["variant"] == "image_only")).split
                    for s in (0, 1))
    assert np.array_equal(other.test, first.test) and not np.array_equal(other.labelled, first.labelled)


def test_controlled_arms_share_every_field_but_the_one_varied():
    """--same-config mtl:loss: uniform, interaction and loss differ in train.weighting only; each
    --shuffle-control all arm differs from its arm in train.shuffle_cf only; image_only keeps its own."""
    from raysearch.search.tracking import flat_config

    vs = parse_variants(["image_only", "mtl:uniform", "mtl:interaction", "mtl:loss"], shuffle_control="all")
    assert [v.name for v in vs if v.shuffled_from] == [f"mtl:{w}+shuffled-cf" for w in ("uniform", "interaction", "loss")]
    _, grid = _grid(vs, same_config="mtl:loss")
    flat = {(u["variant"], u["fold"], u["seed"]): flat_config(from_dict(RunConfig, u["run"])) for u in grid}
    for (name, fold, seed), f in flat.items():
        if name == "image_only":
            continue
        v = next(x for x in vs if x.name == name)
        ref = flat[("mtl:loss", fold, seed)]
        diff = {k for k in f if f[k] != ref[k]}
        expect = ({"train.weighting"} if v.weighting != "loss" else set()) | ({"train.shuffle_cf"} if v.shuffled_from else set())
        assert diff == expect, (name, diff)
        if v.shuffled_from:
            assert {k for k in f if f[k] != flat[(v.shuffled_from, fold, seed)][k]} == {"train.shuffle_cf"}


def test_corrected_resampled_ttest_matches_hand_computation():
    """Nadeau-Bengio: t = mean / sqrt((1/n + n2/n1) var), df n - 1 (values computed by hand)."""
    from scipy.stats import t as student_t

    d = np.array([0.02, 0.01, 0.03, -0.01, 0.02, 0.02])
    n, mean, var = 6, 0.015, 0.00019  # var: sum((d - 0.015)^2) / 5 = 0.00095 / 5
    assert np.var(d, ddof=1) == pytest.approx(var)
    t_hand = mean / np.sqrt((1 / n + 0.25) * var)  # = 1.68585...
    t, p = corrected_resampled_ttest(d, 0.25)
    assert t == pytest.approx(t_hand) and t == pytest.approx(1.68585, abs=1e-4)
    assert p == pytest.approx(2 * student_t.sf(t_hand, 5))
    # the correction only widens: the plain one-sample t on the same differences is smaller in p
    from scipy.stats import ttest_1samp

    assert ttest_1samp(d, 0).pvalue < p
    assert corrected_resampled_ttest(np.zeros(4), 0.25) == (0.0, 1.0)
    # fold level: seeds averaged within each fold first (3 folds x 2 seeds -> 3 values)
    k, pf = fold_level_ttest(np.array([0.1, 0.3, 0.2, 0.2, 0.1, 0.2]), np.array([0, 0, 1, 1, 2, 2]))
    assert k == 3 and pf == pytest.approx(ttest_1samp([0.2, 0.2, 0.15], 0).pvalue)


def test_inner_search_never_sees_the_outer_test_fold():
    """--tune: the inner split (split.inner) has the outer fold's train items and val items and no
    outer test item in any role; its space pins the arm's method and weighting."""
    from raysearch.data import load_dataset
    from raysearch.data.splits import make_split
    from raysearch.experiment.protocol import fold_split, inner_space

    ds = load_dataset("synthetic-tiny")
    cfg = ExperimentConfig(dataset="synthetic-tiny", folds=3, tune=2)
    for fold in range(3):
        outer = make_split(ds, fold_split(cfg, fold, 0, 0.5))
        v = parse_variants(["mtl:interaction"])[1]
        space = inner_space(cfg, arm_run(BASE, v), v, 0.5, fold)
        inner = make_split(ds, space.base.split)
        seen = np.concatenate([inner.train, inner.val, inner.test])
        assert not np.isin(seen, outer.test).any()
        assert np.array_equal(inner.train, outer.train) and np.array_equal(inner.val, outer.val)
        assert np.array_equal(inner.labelled[inner.train], outer.labelled[outer.train])
        assert "train.weighting" not in space.names and space.base.train.weighting == "interaction"


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
            "--folds", "2", "--seeds", "2", "--label-ratios", "0.5", "--shuffle-control", "first", "--n-boot", "100",
            "--out", str(out), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # --json: the summary and nothing else on stdout
    rows = {s["variant"]: s for s in doc["summary"]}
    assert set(rows) == {"image_only", "mtl:uniform", "mtl:uniform+shuffled-cf"} and doc["failed_units"] == 0
    assert rows["mtl:uniform"]["units"] == 4 and 0 <= rows["mtl:uniform"]["p_nb"] <= 1
    # the corrected test is never more confident than the plain unit-level one on the same units
    assert rows["mtl:uniform"]["p_nb"] >= rows["mtl:uniform"]["p_ttest"]
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
    md = (out / "summary.md").read_text()
    assert "p corrected t (Holm)" in md and "corrected resampled t" in md and "skipped: no --tune" in md
    # one engine: the units ran in the sweep's trainable (its data owner's wait and the node are
    # what trial_fn reports) and their stop reasons are the sweep's
    from raysearch.search.results import STOP_REASONS

    assert units["data_s"].notna().all() and units["node"].notna().all()
    assert set(units["stop_reason"]) <= set(STOP_REASONS)

    # resume of a finished experiment re-runs nothing and reproduces the summary
    saved = json.loads((out / "experiment.json").read_text())["config"]
    r2 = CliRunner().invoke(app, ["experiment", "--dataset", "synthetic-tiny", "--out", str(out), "--resume", "--json"])
    assert r2.exit_code == 0, r2.output
    # the record keeps how the run was made (a resume does not rewrite it)
    assert json.loads((out / "experiment.json").read_text())["config"] == saved and not saved["resume"]
    again = {s["variant"]: s for s in json.loads(r2.stdout)["summary"]}
    assert again["mtl:uniform"]["mean_test_map"] == rows["mtl:uniform"]["mean_test_map"]
    # --report-only reads the units from the trials' files: no engine (Ray, data owner) is started,
    # and the CF tables of the run are reused (their key: dataset, fold split, the arms' CF configs)
    from raysearch.experiment import protocol, report

    cf_before = json.loads((out / "cf_tables.json").read_text())
    assert cf_before["key"] and cf_before["auc"]

    def refuse(*a, **k):
        raise AssertionError("--report-only started work it only had to read")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(protocol._Engine, "_start", refuse)
        mp.setattr(report, "cf_tables", refuse)
        r5 = CliRunner().invoke(app, ["experiment", "--dataset", "synthetic-tiny", "--out", str(out), "--report-only",
                                      "--json"])
    assert r5.exit_code == 0, r5.output
    assert {s["variant"]: s["mean_test_map"] for s in json.loads(r5.stdout)["summary"]} == \
        {k: v["mean_test_map"] for k, v in rows.items()}
    assert json.loads((out / "cf_tables.json").read_text()) == cf_before
    # an existing experiment is never overwritten silently
    r3 = CliRunner().invoke(app, args)
    assert r3.exit_code != 0 and "already holds an experiment" in r3.output
    # resume safety: a flag contradicting the saved run, a changed dataset, a truncated record
    bad = CliRunner().invoke(app, ["experiment", "--dataset", "synthetic-tiny", "--out", str(out), "--resume",
                                   "--epochs", "5", "--folds", "3"])
    assert bad.exit_code != 0 and "contradicts the saved run" in bad.output and "epochs" in bad.output
    assert "folds: saved 2, given 3" in bad.output
    # a flag given at its default value contradicts too (the saved run is synthetic-tiny, shuffle first)
    bad = CliRunner().invoke(app, ["experiment", "--dataset", "synthetic", "--out", str(out), "--resume",
                                   "--shuffle-control", "none"])
    assert bad.exit_code != 0 and "dataset: saved 'synthetic-tiny'" in bad.output and "shuffle_control" in bad.output
    meta_path = out / "experiment.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"dataset_fingerprint": "0" * 64}))
    bad = CliRunner().invoke(app, ["experiment", "--dataset", "synthetic-tiny", "--out", str(out), "--resume"])
    assert bad.exit_code != 0 and "changed since the experiment began" in bad.output
    meta_path.write_text(json.dumps(meta)[:200])
    bad = CliRunner().invoke(app, ["experiment", "--dataset", "synthetic-tiny", "--out", str(out), "--resume"])
    assert bad.exit_code != 0 and "experiment.json: unreadable or truncated" in bad.output
    assert "Traceback" not in bad.output
    meta_path.write_text(json.dumps(meta))

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
    shuffled = runs["mtl:uniform+shuffled-cf"]
    assert shuffled.train.shuffle_cf and not runs["mtl:uniform"].train.shuffle_cf and "t0" in src["mtl:uniform"]
    assert dataclasses.replace(shuffled, train=dataclasses.replace(shuffled.train, shuffle_cf=False)) == runs["mtl:uniform"]
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


def test_a_partial_run_with_one_folds_units_gives_no_verdict():
    """Interrupted with only fold 0 paired (two seeds): the seeds share its split, so their spread
    says nothing about other data; the corrected t is not run and the verdict says why, instead of
    a "below image_only" from p over two seeds of one fold or a "no arm beats" from no units."""
    from raysearch.experiment.report import summarize, verdict_lines
    from raysearch.experiment.stats import corrected_resampled_ttest

    vs = parse_variants(["image_only", "mtl:loss"])
    y = (np.random.default_rng(0).random((30, 3)) < 0.3).astype(np.int8)
    rows = [{"variant": v.name, "label_ratio": 1.0, "fold": 0, "seed": seed, "stop_reason": "completed",
             "test_map": 0.40 + 0.001 * seed if v.name == "image_only" else 0.30 + 0.002 * seed}
            for v in vs for seed in (0, 1)]
    rows.append({"variant": "image_only", "label_ratio": 1.0, "fold": 1, "seed": 0, "stop_reason": "completed",
                 "test_map": 0.41})  # the other arm has not finished fold 1 yet
    d = np.array([-0.10, -0.099])
    assert corrected_resampled_ttest(d, 0.5)[1] < 0.05  # what the verdict rested on before
    assert np.isnan(corrected_resampled_ttest(d, 0.5, folds=np.array([0, 0]))[1])
    df, _ = summarize(pd.DataFrame(rows), {"y_true": y}, vs, n_boot=50)
    assert np.isnan(df.set_index("variant").loc["mtl:loss", "p_nb"]) and not df["below_image_only"].any()
    assert verdict_lines(df) == ["label ratio 1: no verdict (the units every arm finished come from 1 fold; "
                                 "the corrected t needs 2 or more)"]
    none = pd.DataFrame([r for r in rows if r["variant"] == "image_only"])
    assert verdict_lines(summarize(none, {"y_true": y}, vs, n_boot=50)[0]) == [
        "label ratio 1: no verdict (no unit finished by every arm)"]


def test_controlled_records_compare_each_arm_with_the_shared_config_arm():
    """--same-config mtl:loss: interaction and uniform are compared with mtl:loss itself, paired per
    unit and per item; an arm equal to the reference has difference 0 and p = 1."""
    from raysearch.experiment.protocol import pred_key
    from raysearch.experiment.report import controlled_records

    rng = np.random.default_rng(0)
    y = (rng.random((60, 3)) < 0.3).astype(np.int8)
    vs = parse_variants(["image_only", "mtl:uniform", "mtl:interaction", "mtl:loss"])
    rows, preds = [], {"y_true": y}
    base = {s: rng.random((60, 3)) for s in (0, 1)}
    for v in vs:
        for seed in (0, 1):
            preds[pred_key(1.0, v.name, seed)] = (base[seed] + (0.6 * y if v.name == "mtl:uniform" else 0)).astype(np.float32)
            for fold in (0, 1, 2):
                bump = 0.05 if v.name == "mtl:uniform" else 0.0
                rows.append({"variant": v.name, "label_ratio": 1.0, "fold": fold, "seed": seed, "stop_reason": "completed",
                             "test_map": 0.3 + 0.01 * fold + 0.002 * seed + bump, "n_test": 20, "n_train": 40})
    recs = {r["arm"]: r for r in controlled_records(pd.DataFrame(rows), preds, vs, "mtl:loss", n_boot=200)}
    assert set(recs) == {"mtl:uniform", "mtl:interaction"} and all(r["vs"] == "mtl:loss" for r in recs.values())
    from raysearch.experiment.report import markdown_table

    assert "mtl:interaction" in markdown_table(list(recs.values()))  # every cell a string
    assert recs["mtl:interaction"]["mean diff"] == "+0.0000" and recs["mtl:interaction"]["p corrected t"] == "1.000"
    assert recs["mtl:uniform"]["mean diff"] == "+0.0500" and recs["mtl:uniform"]["pooled diff [95% CI]"].startswith("+")


def test_a_second_command_on_the_same_experiment_folder_is_refused(tmp_path):
    """Two `experiment --out same` racing: the one holding the folder's lock wins, the other gets a
    one-line refusal before anything is read or written."""
    from typer.testing import CliRunner

    from raysearch._io import run_lock
    from raysearch.cli import app

    out = tmp_path / "exp"
    with run_lock(out, what="held by the test"):
        r = CliRunner().invoke(app, ["experiment", "--dataset", "synthetic-tiny", "--variants", "mtl:uniform",
                                     "--out", str(out), "--no-wandb"])
    assert r.exit_code != 0 and "is being run by another process" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_next_inner_search_data_is_asked_in_the_tail_once():
    """NextData: nothing while trials of this search may still start; one ask when every trial
    has started and one has ended (a free slot); none while the next CF model is still being
    fitted in the background; a failed ask is only a lost head start."""
    from raysearch.experiment.protocol import NextData

    asked = []
    nxt = NextData(3, BASE, ask=asked.append)
    nxt.on_trial_start(trial="a")
    nxt.on_trial_start(trial="b")
    nxt.on_trial_complete(trial="a")  # the third trial takes this slot: no head start yet
    assert asked == []
    nxt.on_trial_start(trial="c")
    nxt.on_trial_error(trial="b")
    nxt.on_trial_complete(trial="c")
    assert len(asked) == 1 and from_dict(RunConfig, asked[0]) == BASE

    later = NextData(1, BASE, ask=asked.append, ready=lambda: False)
    later.on_trial_start()
    later.on_trial_complete()
    assert len(asked) == 1

    def broken(run):
        raise RuntimeError("no Ray")

    bad = NextData(1, BASE, ask=broken)
    bad.on_trial_start()
    bad.on_trial_complete()  # logged, not raised; never retried
    bad.on_trial_complete()
    assert bad.asked


@pytest.mark.timeout(180)
def test_the_tuning_owner_serves_the_next_search_from_what_its_tail_asked(ray_session):
    """The tuning's one owner, asked (by the previous search's tail) for the next search's base
    configuration: that search's sweep finds it by name (``get_if_exists``), and a trial's request
    (other searched values, same data key) is served from what it prepared, computed once."""
    import functools

    import ray

    from raysearch.experiment.protocol import NextData, _ask, _start_owner
    from raysearch.search.shared import SHARED_ACTOR_PREFIX, start_shared_actor

    run = dataclasses.replace(arm_run(BASE, parse_variants(["mtl:uniform"])[1]),
                              cf=CFConfig(model="bpr", epochs=2, dim=8))
    actor = start_shared_actor(SHARED_ACTOR_PREFIX + "test-tuning-owner")
    try:
        tail = NextData(1, run, ask=functools.partial(_ask, actor))
        tail.on_trial_start()
        tail.on_trial_complete()
        adopted = start_shared_actor(SHARED_ACTOR_PREFIX + "test-tuning-owner")
        assert adopted._actor_id == actor._actor_id
        trial = dataclasses.replace(run, train=dataclasses.replace(run.train, lr=0.0123, alpha=2.0))
        ray.get(ray.get(adopted.get.remote(to_dict(trial)), timeout=150), timeout=60)
        stats = ray.get(adopted.stats.remote(), timeout=30)
        assert list(stats["computed"].values()) == [1] and list(stats["requests"].values()) == [2], stats
    finally:
        ray.kill(actor)
    # the background CF owner: a search waits for its fold's model there (fitted once, then on disk)
    from raysearch.experiment.protocol import CFPrefit, _cf_cache_entry, cf_ready

    cfg = ExperimentConfig(dataset="synthetic-tiny", folds=3)
    unit = dataclasses.replace(run, split=dataclasses.replace(run.split, folds=3, fold=2, inner=True),
                               cf=CFConfig(model="bpr", epochs=2, dim=8, seed=7))
    assert not cf_ready(cfg, unit)
    prefit = CFPrefit(_start_owner("test-cf-prefit", cpus=1), {_cf_cache_entry(cfg, unit): to_dict(unit)})
    try:
        prefit.wait(cfg, unit)
        assert cf_ready(cfg, unit)
    finally:
        prefit.stop()


def test_cf_prefit_covers_each_folds_inner_and_outer_cf_model_once_in_order(tmp_path):
    """The background CF fits: one per on-disk CF cache entry (a fold's train items x the CF
    config; ratios, seeds and the fold's inner view share it), in the searches' order; finished
    searches skipped; the units' fits only when the space searches no cf.* parameter."""
    from raysearch.cf.vectors import cache_key
    from raysearch.data import load_dataset
    from raysearch.data.splits import make_split
    from raysearch.experiment.protocol import cf_prefit_runs, inner_space, resolve_configs, tune_key

    space = {"base": {k: v for k, v in TINY.items() if k != "dataset"},
             "params": {"train.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    cfg = ExperimentConfig(dataset="synthetic-tiny", folds=3, seeds=2, label_ratios=(1.0, 0.5), tune=2,
                           tune_space=str(path), variants=("image_only", "mtl:uniform", "mtl:loss"),
                           shuffle_control="first")
    variants = parse_variants(cfg.variants, cfg.shuffle_control)
    runs, _ = resolve_configs(cfg, variants)
    todo = [from_dict(RunConfig, r) for r in cf_prefit_runs(cfg, variants, runs, {})]
    ds = load_dataset("synthetic-tiny")
    keys = [cache_key(ds, make_split(ds, r.split), r.cf) for r in todo]
    # the inner view of a fold keeps its train items: one fit per fold serves both ratios' searches and the units
    assert len(keys) == len(set(keys)) == cfg.folds
    assert [r.split.inner for r in todo] == [True] * 3 and [r.split.fold for r in todo] == [0, 1, 2]
    inner0 = inner_space(cfg, runs["mtl:uniform"], variants[1], 1.0, 0).base
    assert cache_key(ds, make_split(ds, inner0.split), inner0.cf) == keys[0]
    done = {tune_key(1.0, f, v): {} for f in range(3) for v in ("mtl:uniform", "mtl:loss")}
    assert len(cf_prefit_runs(cfg, variants, runs, done)) == 3
    done |= {tune_key(0.5, f, v): {} for f in range(3) for v in ("mtl:uniform", "mtl:loss")}
    left = [from_dict(RunConfig, r) for r in cf_prefit_runs(cfg, variants, runs, done)]  # resumed: the units' fits
    assert [r.split.inner for r in left] == [False] * 3
    assert [cache_key(ds, make_split(ds, r.split), r.cf) for r in left] == keys
    # a space that searches the CF model: the units' CF config is unknown until the searches end
    space["params"]["cf.dim"] = {"type": "categorical", "choices": [8, 16]}
    path.write_text(yaml.safe_dump(space))
    assert [from_dict(RunConfig, r).split.inner for r in cf_prefit_runs(cfg, variants, runs, {})] == [True] * 3
    assert cf_prefit_runs(cfg, variants, runs, done) == []


def test_run_tuning_runs_every_search_on_one_owner_and_stops_it(tmp_path, monkeypatch):
    """Every inner search gets the same, already started owner (``run_sweep(owner=...)``), each
    search's tail is set to ask it for the next search's data, and the owner is stopped when the
    tuning ends, also when a search fails."""
    import raysearch.experiment.protocol as protocol
    import raysearch.search.shared as shared
    import raysearch.search.tune as tune_mod

    space = {"base": {k: v for k, v in TINY.items() if k != "dataset"},
             "params": {"train.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    cfg = ExperimentConfig(dataset="synthetic-tiny", folds=2, seeds=1, label_ratios=(0.5,), tune=2,
                           tune_space=str(path), variants=("image_only", "mtl:uniform"))
    variants = parse_variants(cfg.variants)
    runs, _ = protocol.resolve_configs(cfg, variants)
    started, killed, seen = [], [], []

    def fake_start(name, **kw):
        started.append(name)
        return f"actor:{name}"

    def fake_run_sweep(sc, space, progress, callbacks, owner=None):
        seen.append((sc.name, owner, [type(c).__name__ for c in callbacks]))
        row = {"trial_id": "t0", "best_val_map": 0.5, "stop_reason": "completed", "epochs_run": 2,
               "config": json.dumps(to_dict(space.base))}
        return type("R", (), {"results": pd.DataFrame([row])})()

    monkeypatch.setattr(shared, "start_shared_actor", fake_start)
    monkeypatch.setattr(protocol, "_kill", killed.append)
    monkeypatch.setattr(tune_mod, "run_sweep", fake_run_sweep)
    done = protocol.run_tuning(cfg, tmp_path / "exp", variants, runs, {}, lambda d: None)
    assert len(done) == 4 and len(started) == 1 and killed == [f"actor:{started[0]}"]
    assert started[0].endswith(f"experiment-tune-exp-{os.getpid()}")
    assert {owner for _, owner, _ in seen} == {started[0]}
    assert [cbs for _, _, cbs in seen] == [["NextDataCallback"]] * 3 + [[]]  # the last search has no next one
    assert protocol.run_tuning(cfg, tmp_path / "exp", variants, runs, dict(done), lambda d: None) == done
    assert len(started) == 1  # nothing left to tune: no owner started

    def failing(sc, space, progress, callbacks, owner=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(tune_mod, "run_sweep", failing)
    with pytest.raises(RuntimeError, match="boom"):
        protocol.run_tuning(cfg, tmp_path / "exp2", variants, runs, {}, lambda d: None)
    assert len(started) == 2 and killed[-1] == f"actor:{started[1]}"
