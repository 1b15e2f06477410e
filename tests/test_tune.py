"""The sweep engine on ``synthetic-tiny`` with ``tiny_cnn`` at 16 px (real Ray Tune/Train, Optuna, W&B offline).

Trials run one at a time (``max_concurrent=1``) so the sampled configs and ASHA's decisions are
deterministic on CPU.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ray.tune import Callback
from typer.testing import CliRunner

from raysearch.cli import app
from raysearch.config import ConfigError, load_run_config
from raysearch.runs import best_row
from raysearch.search.tracking import offline_runs
from raysearch.search.tune import SweepConfig, run_sweep
from tests.wandb_offline import read_run

SPACE = {
    "base": {
        "train": {"method": "mtl", "backbone": "tiny_cnn", "weights": "none", "image_size": 16, "epochs": 6,
                  "batch_size": 32, "patience": 6},
        "cf": {"model": "vaecf", "epochs": 5, "dim": 8, "hidden": [16]},
    },
    "params": {
        "train.weighting": {"type": "categorical", "choices": ["uniform", "interaction"]},
        "train.alpha": {"type": "float", "low": 0.0, "high": 5.0},
        "train.omega": {"type": "float", "low": 1.0, "high": 10.0, "when": {"train.weighting": ["interaction"]}},
        "train.lr": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
    },
    "asha": {"grace_period": 1, "reduction_factor": 2},
}


def _space(tmp_path: Path, **changes) -> str:
    data = json.loads(json.dumps(SPACE))
    for k, v in changes.items():
        data[k] = v
    p = tmp_path / f"space-{len(list(tmp_path.glob('space-*.yaml')))}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(p)


def _cfg(tmp_path: Path, name: str, **kw) -> SweepConfig:
    base = dict(dataset="synthetic-tiny", trials=4, max_concurrent=1, storage=str(tmp_path / "runs"), name=name, seed=0)
    base.update(kw)
    base.setdefault("space", _space(tmp_path))
    return SweepConfig(**base)


@pytest.mark.timeout(240)
def test_sweep_asha_results_wandb(ray_session, tmp_path):
    res = run_sweep(_cfg(tmp_path, "asha"))
    df = res.results
    assert len(df) == 4 and set(df["stop_reason"]) <= {"completed", "early_stopped", "asha_stopped"}
    assert (df["stop_reason"] == "asha_stopped").sum() >= 1, df[["trial_id", "stop_reason", "epochs_run"]]
    done = df[df["stop_reason"] != "asha_stopped"]
    stopped = df[df["stop_reason"] == "asha_stopped"]
    assert (done["epochs_run"] == 6).all() and (stopped["epochs_run"] < 6).all()
    assert done["test_map"].between(0, 1).all() and stopped["test_map"].isna().all()
    assert df["best_val_map"].between(0, 1).all()
    # omega only searched for the non-uniform weighting
    assert df.loc[df["weighting"] == "uniform", "train.omega"].isna().all()
    # results.parquet + best.yaml (a config `raysearch train --config` reads), chosen on val mAP
    disk = pd.read_parquet(res.run_dir / "results.parquet")
    assert len(disk) == 4
    # where each trial ran, readable (issue 18): the host name and IP its training reported
    assert disk["node"].notna().all() and disk["node_ip"].notna().all()
    assert (disk["host"] == socket.gethostname()).all(), disk[["trial_id", "host", "node_ip"]]
    best = load_run_config(res.best_yaml)
    top = df.loc[df["best_val_map"].idxmax()]
    assert best.train.lr == pytest.approx(top["train.lr"]) and best.train.backbone == "tiny_cnn"
    assert Path(top["checkpoint"], "model.pt").is_file()
    # best.yaml records the trials' torch threads (--cpus-per-trial 1), so retraining it in a process
    # with another default count reproduces the trial exactly (CPU float reductions depend on it)
    assert best.train.threads == 1
    import torch

    from raysearch.train import fit, prepare_training_data

    picked = df.set_index("trial_id").loc[best_row(df)["trial_id"]]
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        again = fit(best, prepare_training_data(best))
        assert torch.get_num_threads() == 2  # fit restores the caller's count
    finally:
        torch.set_num_threads(prev)
    assert (again.best_val_map, again.test_map, again.epochs_run) == \
        (picked["best_val_map"], picked["test_map"], picked["epochs_run"])
    # offline W&B: one run per trial under the run directory, grouped by sweep, tagged method + weighting
    runs = [read_run(r) for r in offline_runs(res.run_dir)]
    assert len(runs) == 4
    by_trial = {r["id"].rsplit("-", 1)[-1]: r for r in runs}  # run id: <group>-<trial id>
    assert set(by_trial) == set(df["trial_id"])
    for tid, run in by_trial.items():
        row = df.set_index("trial_id").loc[tid]
        epochs = [h["epoch"] for h in run["history"] if "val_map" in h]
        assert epochs and epochs == sorted(epochs) and max(epochs) == row["epochs_run"], (tid, epochs)
        assert run["summary"]["stop_reason"] == row["stop_reason"] and run["exit_code"] == 0
        assert run["summary"]["best_val_map"] == pytest.approx(row["best_val_map"])
        assert row["weighting"] in run["tags"] and "mtl" in run["tags"]
    # every run written by one logging process (the sweep's WandbRunsActor), not one per trial
    assert len({r["pid"] for r in runs}) == 1 and runs[0]["pid"] is not None
    # one image array + one object per distinct (CF config, weighting) in the object store
    stats = res.shared_stats
    assert stats["n_images_objects"] == 1
    assert set(stats["computed"].values()) == {1}
    assert len(stats["computed"]) == df["weighting"].nunique()
    assert sum(stats["requests"].values()) == 4
    # where the time went (issue 21): validation apart from training, and each epoch's report time
    assert (disk["eval_time_s"] > 0).all() and (disk["eval_time_s"] < disk["wall_time_s"]).all()
    first = [json.loads(f.read_text().splitlines()[0]) for f in res.run_dir.glob("*/result.json")]
    assert len(first) == 4 and all(abs(r["reported_at"] - r["timestamp"]) < 2 for r in first)
    # `raysearch results RUN_DIR` reprints the same table
    r = CliRunner().invoke(app, ["results", str(res.run_dir), "--json"])
    assert r.exit_code == 0, r.output
    assert {x["trial_id"] for x in json.loads(r.output)} == set(df["trial_id"])
    assert {x["host"] for x in json.loads(r.output)} == {socket.gethostname()}
    r = CliRunner().invoke(app, ["results", str(res.run_dir)])
    header = next(ln for ln in r.output.splitlines() if "# ┃ trial" in ln)
    assert r.exit_code == 0 and "node" in header and socket.gethostname() in r.output, r.output


@pytest.mark.timeout(240)
def test_two_cf_configs_each_computed_once(ray_session, tmp_path, home):
    space = _space(tmp_path, params={
        "train.alpha": {"type": "float", "low": 0.5, "high": 2.0},
        "cf.dim": {"type": "categorical", "choices": [4, 12]},
    })
    cfg = _cfg(tmp_path, "cf2", space=space, trials=5, scheduler="none", search="random", epochs=1,
               max_concurrent=2, seed=1, wandb=False)
    cf_cache = home / "cache" / "cf"
    before = set(cf_cache.glob("*")) if cf_cache.is_dir() else set()
    res = run_sweep(cfg)
    dims = Counter(res.results["cf.dim"])
    assert set(dims) == {4, 12} and max(dims.values()) >= 2  # both configs used, at least one by 2+ trials
    computed = res.shared_stats["computed"]
    assert len(computed) == 2 and set(computed.values()) == {1}
    assert sorted(res.shared_stats["requests"].values()) == sorted(dims.values())
    # the owner's cost per CF configuration, named by its model, dim and epochs (issue 21 a'')
    fits = res.shared_stats["cf_fits"]
    labels = {f["cf"].split(",")[0] for f in fits.values()}  # the prefetch may also fit the base config's
    assert {"vaecf dim 4", "vaecf dim 12"} <= labels and all(" 5 epochs" in f["cf"] for f in fits.values()), fits
    assert all(f["seconds"] > 0 and f["how"] for f in fits.values())
    new_models = [p for p in set(cf_cache.glob("*.parquet")) - before if ".weights-" not in p.name]
    assert len(new_models) == 2  # the on-disk CF cache holds exactly one trained model per config


class _InterruptAfter(Callback):
    """Send Ctrl+C to the driver after k completed trials (once: the marker survives Tuner.restore)."""

    def __init__(self, k: int, marker: str) -> None:
        self.k, self.marker, self.done = k, marker, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        if self.done == self.k and not os.path.exists(self.marker):
            Path(self.marker).write_text(trial.trial_id)
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.timeout(300)
def test_resume_does_not_rerun_finished_trials(ray_session, tmp_path):
    cfg = _cfg(tmp_path, "resume", trials=5, epochs=3)
    marker = tmp_path / "interrupted"
    first = run_sweep(cfg, callbacks=[_InterruptAfter(2, str(marker))])
    assert marker.exists()
    assert len(first.results) < 5 and first.interrupted  # interrupted before the budget was spent
    finished_before = set(first.results.loc[first.results["stop_reason"].isin(
        ["completed", "early_stopped", "asha_stopped"]), "trial_id"])
    assert len(finished_before) >= 2
    with pytest.raises(ConfigError, match="already exists"):
        run_sweep(cfg)
    # the space file edited in between: the new trials would not be built like the finished ones
    space_file = Path(cfg.space)
    original = space_file.read_text()
    edited = yaml.safe_load(original)
    edited["base"]["train"]["batch_size"] = 16
    space_file.write_text(yaml.safe_dump(edited, sort_keys=False))
    with pytest.raises(ConfigError, match=r"search space .*space-0\.yaml changed since the sweep began "
                                          r"\(base\.train\.batch_size 32 -> 16;") as e:
        run_sweep(dataclasses.replace(cfg, resume=True))
    assert "\n" not in str(e.value)
    space_file.write_text(original)
    second = run_sweep(dataclasses.replace(cfg, resume=True))
    df = second.results
    assert len(df) == 5 and df["trial_id"].is_unique and not second.interrupted
    assert set(df["stop_reason"]) <= {"completed", "early_stopped", "asha_stopped"}
    # every trial ran exactly once: one W&B run folder per trial id, none for a re-run
    starts = Counter(p.name.rsplit("-", 1)[-1] for p in offline_runs(second.run_dir))
    assert all(starts[t] == 1 for t in finished_before), starts
    assert set(starts) == set(df["trial_id"])
    # the searcher kept its history: no parameter set was proposed twice
    assert df["train.alpha"].is_unique
    meta = json.loads((second.run_dir / "sweep.json").read_text())
    assert meta["resumed"] == 1
    with pytest.raises(ConfigError, match="no restorable sweep"):
        run_sweep(dataclasses.replace(cfg, name="never-ran", resume=True))


@pytest.mark.timeout(120)
def test_ddp_trials_without_the_state_api_are_refused_not_hung(ray_session, tmp_path):
    """The session's Ray has no dashboard: a TorchTrainer sweep could never free a stopped trial's
    placement group, so it is one clear error before any trial (the DDP path itself runs in
    tests/test_cluster.py on a dashboard-enabled multi-node cluster)."""
    cfg = _cfg(tmp_path, "ddp", trials=1, epochs=2, torch_trainer=True, workers_per_trial=1, cpus_per_trial=1.0)
    with pytest.raises(ConfigError, match="State API"):
        run_sweep(cfg)
    assert not (tmp_path / "runs" / "ddp").exists()  # refused before anything was written


def test_bad_space_file_is_a_clear_cli_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"params": {"train.alpha": {"type": "float", "low": 2.0, "high": 1.0}}}))
    r = CliRunner().invoke(app, ["tune", "--dataset", "synthetic-tiny", "--space", str(bad), "--no-wandb"])
    assert r.exit_code == 2
    assert str(bad) in r.output and "train.alpha" in r.output and "bad range" in r.output
    r = CliRunner().invoke(app, ["tune", "--dataset", "synthetic-tiny", "--scheduler", "hyperband"])
    assert r.exit_code == 2 and "--scheduler" in r.output
    r = CliRunner().invoke(app, ["tune", "--dataset", "synthetic-tiny", "--resume"])
    assert r.exit_code == 2 and "--name" in r.output


def test_shared_data_key_is_the_weighting_actually_used():
    """contrastive trains with uniform weights whatever train.weighting says: it must not share
    (or poison) the cache entry of an mtl trial with that weighting."""
    from raysearch.config import RunConfig, TrainConfig
    from raysearch.train.data import data_keys

    def key(method, weighting, **kw):
        return data_keys(RunConfig(dataset="synthetic-tiny", train=TrainConfig(method=method, weighting=weighting, **kw)))[1]

    assert key("contrastive", "interaction") == key("contrastive", "uniform") == key("mtl", "uniform")
    assert key("contrastive", "interaction") != key("mtl", "interaction")
    assert key("sequential", "loss") == key("mtl", "loss")
    assert key("mtl", "loss") != key("mtl", "loss", cf_standardize=False)
    assert key("image_only", "loss") == key("image_only", "uniform")


@pytest.mark.timeout(120)
def test_trial_larger_than_the_cluster_is_an_error_not_a_hang(ray_session, tmp_path):
    with pytest.raises(ConfigError, match="cpus-per-trial 4 needs 4 CPUs on one node, the largest node offers"):
        run_sweep(_cfg(tmp_path, "too-big", trials=1, cpus_per_trial=4.0))


@pytest.mark.parametrize("rung_metric, b_goes_on", [("val_map", True), ("val_auc", False)])
def test_asha_judges_its_rungs_on_the_rung_metric(tmp_path, rung_metric, b_goes_on):
    """--rung-metric val_auc: ASHA cuts on the epoch's val AUC while Tune, the searcher and the pick
    keep val_map (Tune refuses a scheduler with its own metric next to TuneConfig's)."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from raysearch.search.tune import ASHA_STOPPED_FILE, _asha

    record = tmp_path / ASHA_STOPPED_FILE
    asha = _asha(record, rung_metric, time_attr="asha_epoch", max_t=8, grace_period=1, reduction_factor=2,
                 stop_last_trials=False)
    assert asha.set_search_properties("val_map", "max")
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    for t in (a, b):
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, a, {"asha_epoch": 1, "val_map": 0.2, "val_auc": 0.9}) == TrialScheduler.CONTINUE
    # b has the better val mAP but the worse val AUC at the rung
    action = asha.on_trial_result(None, b, {"asha_epoch": 1, "val_map": 0.5, "val_auc": 0.6})
    assert (action == TrialScheduler.CONTINUE) == b_goes_on
    assert (json.loads(record.read_text()) if record.exists() else []) == ([] if b_goes_on else ["b"])
    # a result without the rung metric counts as NaN: it never stops a trial
    c = SimpleNamespace(trial_id="c")
    asha.on_trial_add(None, c)
    assert asha.on_trial_result(None, c, {"asha_epoch": 1, "val_map": 0.9}) == TrialScheduler.CONTINUE
    # a final report is judged on its best epoch's val AUC (trainables.final_metrics) like any result
    d = SimpleNamespace(trial_id="d")
    asha.on_trial_add(None, d)
    asha.on_trial_complete(None, d, {"asha_epoch": 2, "val_map": 0.9, "val_auc": 0.1, "final": 1})
    rung2 = dict(asha._brackets[0]._rungs)[2]
    assert rung2 == {"d": 0.1 if rung_metric == "val_auc" else 0.9}


def test_a_resumed_sweep_reports_the_rungs_it_was_started_with(tmp_path):
    """The restored Tuner keeps its scheduler: the summary must not re-derive the rungs from a
    space file edited since (or shipped anew), nor invent them for a sweep saved before they were
    recorded."""
    from raysearch.search.space import load_space
    from raysearch.search.tune import asha_settings, sweep_asha

    cfg = _cfg(tmp_path, "r", rung_metric="val_auc")
    space = load_space(cfg.space)
    now = {"grace_period": 1, "reduction_factor": 2, "metric": "val_auc"}
    assert sweep_asha(None, cfg, space) == asha_settings(cfg, space) == now
    started = {"grace_period": 1, "reduction_factor": 4, "metric": "val_map"}
    assert sweep_asha({"asha": started}, cfg, space) == started
    assert sweep_asha({"sweep": {}}, cfg, space) is None  # sweep.json of an older version
    assert asha_settings(dataclasses.replace(cfg, scheduler="none"), space) is None


def test_a_resume_checks_the_space_its_trials_were_built_from(tmp_path, caplog):
    """sweep.json records the space; a resume refuses an edit of its base config or parameters,
    naming the key, and a record of an older version is checked from then on."""
    from raysearch.search.space import load_space
    from raysearch.search.tune import check_same_space, space_record

    space = load_space(_space(tmp_path))
    meta = {"space": space_record(space)}
    check_same_space(meta, space, tmp_path / "sweep.json")  # unchanged: no error
    wider = load_space(_space(tmp_path, params={**SPACE["params"], "train.alpha": {
        "type": "float", "low": 0.0, "high": 9.0}}))
    with pytest.raises(ConfigError, match=r"\(params\.train\.alpha\.high 5\.0 -> 9\.0; \S*sweep\.json\)"):
        check_same_space(meta, wider, tmp_path / "sweep.json")
    base = load_space(_space(tmp_path, base={**SPACE["base"], "cf": {**SPACE["base"]["cf"], "dim": 16}}))
    with pytest.raises(ConfigError, match=r"\(base\.cf\.dim 8 -> 16; "):
        check_same_space(meta, base, tmp_path / "sweep.json")
    # new rungs are not refused: the restored Tuner keeps its scheduler (sweep_asha reports its rungs)
    with caplog.at_level("WARNING"):
        check_same_space(meta, load_space(_space(tmp_path, asha={"grace_period": 1, "reduction_factor": 3})),
                         tmp_path / "sweep.json")
    assert "ASHA settings changed since the sweep began (reduction_factor 2 -> 3)" in caplog.text
    caplog.clear()
    fewer = {**SPACE["params"]}
    del fewer["train.lr"]
    with pytest.raises(ConfigError, match=r"\(params\.train\.lr removed; "):
        check_same_space(meta, load_space(_space(tmp_path, params=fewer)), tmp_path / "sweep.json")
    # a field only the new record has comes from a newer raysearch's config classes, not an edit
    older = json.loads(json.dumps(meta))
    del older["space"]["base"]["train"]["trunk_hidden"], older["space"]["params"]["train.alpha"]["log"]
    check_same_space(older, space, tmp_path / "sweep.json")
    with caplog.at_level("WARNING"):
        check_same_space({}, wider, tmp_path / "sweep.json")
    assert "predates search-space records" in caplog.text
    with pytest.raises(ConfigError, match=r"sweep\.json: 'space' is not a search-space record \(list\)"):
        check_same_space({"space": []}, space, tmp_path / "sweep.json")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("rung_metric", ["val_map", "val_auc"])
def test_asha_rung_at_max_t_never_cuts_a_finished_trial(ray_session, tmp_path, rung_metric):
    """epochs = grace * rf^k (4 = 1 * 2^2): ASHA has a rung at max_t; the last epoch must still
    end with the final report (test mAP + model), never as an ASHA stop.  On val AUC the final
    report carries its best epoch's val AUC, so the rung at max_t is not all NaN (numpy warned)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_sweep(_cfg(tmp_path, "rung", trials=6, epochs=4, wandb=False, seed=3,
                             space=_space(tmp_path, asha={"grace_period": 1, "reduction_factor": 2,
                                                          "metric": rung_metric})))
    assert not [w for w in caught if "All-NaN slice" in str(w.message)], [str(w.message) for w in caught]
    assert res.asha == {"grace_period": 1, "reduction_factor": 2, "metric": rung_metric}
    assert json.loads((res.run_dir / "sweep.json").read_text())["asha"] == res.asha
    df = res.results
    full = df[df["epochs_run"] == 4]
    assert len(full) >= 1
    assert (full["stop_reason"].isin(["completed", "early_stopped"])).all(), full[["trial_id", "stop_reason"]]
    assert full["test_map"].between(0, 1).all() and full["checkpoint"].notna().all()
    assert (df.loc[df["stop_reason"] == "asha_stopped", "epochs_run"] < 4).all()
    best = df.loc[df["best_val_map"].idxmax()]
    assert best["stop_reason"] in ("completed", "early_stopped", "asha_stopped")


@pytest.mark.timeout(300)
def test_ctrl_c_with_fifo_writes_results_and_resume_hint(ray_session, tmp_path):
    cfg = _cfg(tmp_path, "fifo-int", trials=4, epochs=3, scheduler="none", wandb=False)
    res = run_sweep(cfg, callbacks=[_InterruptAfter(1, str(tmp_path / "int"))])
    df = pd.read_parquet(res.run_dir / "results.parquet")  # written despite the interruption
    assert res.interrupted and len(df) >= 1
    assert set(df["stop_reason"]) <= {"completed", "early_stopped", "interrupted"}
    assert (df["stop_reason"] == "completed").sum() >= 1
    again = run_sweep(dataclasses.replace(cfg, resume=True))
    assert len(again.results) == 4 and not again.interrupted
    assert set(again.results["stop_reason"]) <= {"completed", "early_stopped"}


class _InterruptAtStart(Callback):
    """Ctrl+C as the k-th trial starts: it is interrupted before its first report."""

    def __init__(self, k: int) -> None:
        self.k, self.started = k, 0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started += 1
        if self.started == self.k:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.timeout(240)
def test_interrupted_trial_without_a_report_keeps_its_parameters(ray_session, tmp_path):
    """Issue 18: a trial the sweep left before it ever ran (pending: the session's 2 CPUs hold the
    data owner and one trial) showed '-' for every parameter, as its Result has no metrics, hence
    no config; its Trial's config is known and is what results.parquet keeps."""
    res = run_sweep(_cfg(tmp_path, "cut", trials=2, max_concurrent=2, epochs=1, scheduler="none", wandb=False),
                    callbacks=[_InterruptAtStart(1)])
    df = pd.read_parquet(res.run_dir / "results.parquet")
    cut = df[(df["stop_reason"] == "interrupted") & (df["epochs_run"] == 0)]
    assert res.interrupted and len(cut) == 2, df[["trial_id", "stop_reason", "epochs_run"]]
    assert cut[["train.weighting", "train.alpha", "train.lr"]].notna().all(axis=None), cut
    for _, r in cut.iterrows():
        assert json.loads(r["config"])["train"]["lr"] == pytest.approx(r["train.lr"])


def test_name_with_path_separators_or_existing_sweep_writes_nothing(ray_session, tmp_path):
    with pytest.raises(ConfigError, match="no path separators"):
        _cfg(tmp_path, "../../x")
    run_dir = tmp_path / "runs" / "taken"
    run_dir.mkdir(parents=True)
    (run_dir / "sweep.json").write_text('{"sweep": {"trials": 7}}')
    with pytest.raises(ConfigError, match="already exists"):
        run_sweep(_cfg(tmp_path, "taken"))
    assert (run_dir / "sweep.json").read_text() == '{"sweep": {"trials": 7}}'  # untouched


def test_trial_resume_state_round_trip(tmp_path):
    """fit(resume=state after epoch k) gives the same final model as an uninterrupted fit."""
    from raysearch.config import RunConfig, TrainConfig
    from raysearch.train import fit, prepare_training_data

    run = RunConfig(dataset="synthetic-tiny", train=TrainConfig(
        method="image_only", backbone="tiny_cnn", weights="none", image_size=16, epochs=4, batch_size=32,
        patience=10, seed=1))
    data = prepare_training_data(run)
    states = []
    full = fit(run, data, callback=lambda m: states.append(m["_state"]()) if m["epoch"] == 2 else None,
               epoch_state=True)
    resumed = fit(run, data, resume=states[0])
    assert resumed.epochs_run == 4
    assert resumed.best_val_map == pytest.approx(full.best_val_map, abs=1e-6)
    assert resumed.test_map == pytest.approx(full.test_map, abs=1e-6)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    # validation time carries over a resume like training time (cumulative, never restarted at 0)
    assert states[0]["eval_time_s"] == pytest.approx(sum(h["val_time_s"] for h in full.history[:2]))


def test_logged_config_leaves_out_options_the_trial_did_not_use():
    from raysearch.config import CFConfig, RunConfig, TrainConfig
    from raysearch.search.tracking import used_config

    bpr_uniform = used_config(RunConfig(cf=CFConfig(model="bpr"), train=TrainConfig(method="mtl", weighting="uniform")))
    assert "train.omega" not in bpr_uniform and "cf.beta" not in bpr_uniform and "cf.hidden" not in bpr_uniform
    assert bpr_uniform["cf.reg"] == 0.01 and bpr_uniform["train.alpha"] == 1.5
    vae_inter = used_config(RunConfig(cf=CFConfig(model="vaecf"), train=TrainConfig(method="mtl", weighting="interaction")))
    assert "train.omega" in vae_inter and "cf.beta" in vae_inter and "cf.reg" not in vae_inter
    img = used_config(RunConfig(train=TrainConfig(method="image_only", weighting="loss")))
    assert not any(k.startswith("cf.") for k in img) and "train.alpha" not in img and "train.weighting" not in img
    assert "train.tau" in used_config(RunConfig(train=TrainConfig(method="contrastive")))


def test_empty_space_file_and_all_failed_trials_are_one_line_errors(ray_session, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    r = CliRunner().invoke(app, ["tune", "--dataset", "synthetic-tiny", "--space", str(empty), "--no-wandb"])
    assert r.exit_code == 2 and "empty search-space file" in r.output and "Traceback" not in r.output
    # every trial fails the same way (a weights file that does not exist): one line per distinct error
    bad = _space(tmp_path, base={"train": {"method": "image_only", "backbone": "tiny_cnn",
                                           "weights": str(tmp_path / "missing.pt"), "image_size": 16, "epochs": 2}})
    r = CliRunner().invoke(app, ["tune", "--dataset", "synthetic-tiny", "--space", bad, "--trials", "2",
                                 "--max-concurrent", "1", "--no-wandb", "--storage", str(tmp_path / "runs"),
                                 "--name", "allfail", "--max-failures", "0", "--json"])
    assert r.exit_code == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "2 x" in errors[0] and "missing.pt" in errors[0], r.stderr[-2000:]
    out = json.loads(r.stdout)  # stdout is the JSON alone
    assert {t["stop_reason"] for t in out["trials"]} == {"error"}


def test_wandb_callback_offline_without_key_or_mode(monkeypatch, tmp_path):
    """No WANDB_API_KEY and no WANDB_MODE (a new user's machine): offline, never Ray's 'No WandB API key'."""
    from raysearch.search.space import parse_space
    from raysearch.search.tracking import WandbSettings, sweep_wandb_callback, wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode() == "offline"
    cb = sweep_wandb_callback(WandbSettings(group="g", dir=str(tmp_path), mode=wandb_mode()),
                              parse_space(SPACE, "inline"), lambda trial, failed: "completed")
    cb.setup()
    assert cb.project == "raysearch"
