"""results.parquet / best.yaml / rich table / dashboard, from a hand-built results frame (no Ray)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from raysearch.cli import app
from raysearch.config import ConfigError, RunConfig, TrainConfig, load_run_config, to_dict
from raysearch.report import DASHBOARD_PNG, DASHBOARD_TABLE, dashboard, results_table, weighting_summary
from raysearch.search.results import BEST_FILE, RESULTS_FILE, best_row, load_results, write_results


def _frame() -> pd.DataFrame:
    rows = []
    spec = [  # (weighting, alpha, val, test, epochs, reason)
        ("uniform", 0.5, 0.41, 0.40, 6, "completed"),
        ("uniform", 2.0, 0.30, float("nan"), 1, "asha_stopped"),
        ("interaction", 1.5, 0.52, 0.49, 6, "completed"),
        ("loss", 3.0, 0.47, 0.50, 4, "early_stopped"),
        ("loss", 4.0, float("nan"), float("nan"), 0, "error"),
    ]
    for i, (w, a, v, t, e, r) in enumerate(spec):
        run = RunConfig(dataset="synthetic-tiny", train=TrainConfig(weighting=w, alpha=a, backbone="tiny_cnn"))
        rows.append({"trial_id": f"t{i}", "method": "mtl", "weighting": w, "train.weighting": w, "train.alpha": a,
                     "train.omega": None if w == "uniform" else 3.0, "best_val_map": v, "test_map": t,
                     "epochs_run": e, "stop_reason": r, "wall_time_s": 1.0 + i, "train_time_s": 0.5 + i,
                     "config": json.dumps(to_dict(run))})
    return pd.DataFrame(rows)


def test_write_and_reload(tmp_path):
    df = _frame()
    out, best = write_results(df, tmp_path)
    assert out == tmp_path / RESULTS_FILE and best == tmp_path / BEST_FILE
    back = load_results(tmp_path)
    assert len(back) == 5 and list(back["stop_reason"]) == list(df["stop_reason"])
    # best is chosen on val mAP (t2: 0.52), not on test mAP (t3 has the higher test)
    cfg = load_run_config(best)
    assert cfg.train.weighting == "interaction" and cfg.train.alpha == 1.5 and cfg.dataset == "synthetic-tiny"
    assert best_row(df)["trial_id"] == "t2"


def test_bad_stop_reason_and_missing_results(tmp_path):
    df = _frame()
    df.loc[0, "stop_reason"] = "finished"
    with pytest.raises(ValueError, match="finished"):
        write_results(df, tmp_path)
    with pytest.raises(ConfigError, match="no results.parquet"):
        load_results(tmp_path / "nope")
    (tmp_path / RESULTS_FILE).write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match="cannot read results"):
        load_results(tmp_path)


def test_table_and_summary():
    df = _frame()
    from rich.console import Console

    con = Console(width=200, record=True)
    con.print(results_table(df, top=3))
    text = con.export_text()
    assert "t2" in text and "interaction" in text and "5 trials" in text
    assert text.index("t2") < text.index("t3") < text.index("t0")  # ranked by val mAP
    assert "* best.yaml" in text
    s = weighting_summary(df).set_index("weighting")
    assert s.loc["uniform", "trials"] == 2 and s.loc["uniform", "best_of_sweep_val_map"] == pytest.approx(0.41)
    assert s.loc["loss", "best_of_sweep_test_map"] == pytest.approx(0.50)
    assert s.loc["uniform", "comparable"] == 1 and s.loc["uniform", "asha_stopped"] == 1
    assert s.loc["uniform", "epochs_total"] == df.loc[df["weighting"] == "uniform", "epochs_run"].sum()


def test_table_stars_the_best_yaml_trial_not_a_higher_asha_stopped_one():
    from rich.console import Console

    df = _frame()
    df.loc[df["trial_id"] == "t1", "best_val_map"] = 0.60  # ASHA-stopped after fewer epochs: tops the column
    con = Console(width=200, record=True)
    con.print(results_table(df, top=5))
    rows = {ln.split("│")[2].strip(): ln.split("│")[1].strip() for ln in con.export_text().splitlines()
            if ln.count("│") > 3 and ln.split("│")[2].strip().startswith("t")}
    assert rows["t1"] == "1" and rows["t2"] == "2*", rows  # best.yaml names t2
    assert best_row(df)["trial_id"] == "t2"
    con = Console(width=200, record=True)
    con.print(results_table(df, top=1))  # the starred trial is not among the rows shown: no caption for it
    assert "*" not in con.export_text()
    # an interrupted sweep where no trial ran its schedule: best.yaml falls back to an ASHA-stopped
    # trial, and the caption says so instead of "among trials that ran their schedule"
    cut = df[df["stop_reason"] == "asha_stopped"].copy()
    con = Console(width=200, record=True)
    con.print(results_table(cut, top=5))
    text = con.export_text()
    assert "no trial ran its schedule yet" in text and "among trials that ran their schedule" not in text, text


def test_sweep_dashboard_compares_only_comparable_trials(tmp_path):
    """An ASHA-stopped trial with a higher val mAP (seen after fewer epochs) is marked, not the best."""
    df = _frame()
    df.loc[df["trial_id"] == "t1", "best_val_map"] = 0.60  # ASHA-stopped, uniform
    write_results(df, tmp_path)
    out = dashboard(tmp_path, online=False)
    s = {(r["weighting"]): r for r in out["summary"]}
    assert out["kind"] == "sweep" and s["uniform"]["best_of_sweep_val_map"] == pytest.approx(0.41)
    md = (tmp_path / DASHBOARD_TABLE).read_text()
    assert md.startswith("Best-of-sweep") and "asha_stopped" in md


def test_dashboard_and_cli(tmp_path):
    write_results(_frame(), tmp_path)
    out = dashboard(tmp_path, online=False)
    png = tmp_path / DASHBOARD_PNG
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / DASHBOARD_TABLE).read_text()
    assert "| mtl | interaction |" in md and "wandb" not in out
    runner = CliRunner()
    r = runner.invoke(app, ["results", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    recs = json.loads(r.output)
    assert recs[0]["trial_id"] == "t2" and "config" not in recs[0]
    r = runner.invoke(app, ["dashboard", str(tmp_path)])
    assert r.exit_code == 0 and "interaction" in r.output
    r = runner.invoke(app, ["results", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no results.parquet" in r.output


def test_best_row_ignores_test_map_on_ties_and_skips_errored_trials():
    df = _frame()
    df.loc[df["trial_id"] == "t3", "best_val_map"] = 0.52  # tie with t2 on val; t3 has the higher test mAP
    assert best_row(df)["trial_id"] == "t2"  # results order breaks the tie, never the test set
    df.loc[df["trial_id"] == "t4", ["best_val_map", "stop_reason"]] = [0.99, "error"]
    assert best_row(df)["trial_id"] == "t2"  # a crashed trial's high val mAP is not a winner


def test_best_row_prefers_trials_that_ran_their_schedule():
    df = _frame()
    df.loc[df["trial_id"] == "t1", ["best_val_map", "stop_reason"]] = [0.99, "asha_stopped"]  # fewer epochs
    assert best_row(df)["stop_reason"] in ("completed", "early_stopped")
    only_cut = df.assign(stop_reason="asha_stopped")
    assert best_row(only_cut)["trial_id"] == "t1"  # when none completed, an ASHA-stopped one still qualifies
