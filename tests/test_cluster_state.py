"""Visible cluster state (issue 18): where each trial ran (host/IP) in results.parquet and the printed
tables, the retries column, status lines off a terminal, the resume hint on a cluster, checkpoint
spacing in the help, and the small output fixes (restart warning, interrupted trial's parameters,
the closing line).  No Ray cluster: hand-built grids, frames and callback calls."""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from raysearch.cli import app
from raysearch.config import ConfigError, RunConfig, TrainConfig, to_dict
from raysearch.report import results_table
from raysearch.search.results import (
    EXTRA_COLUMNS, load_results, node_labels, node_location, results_frame, trial_failure, write_results,
)
from raysearch.search.space import parse_space

SPACE = {
    "base": {"train": {"method": "mtl", "backbone": "tiny_cnn", "weights": "none", "image_size": 16, "epochs": 3}},
    "params": {
        "train.weighting": {"type": "categorical", "choices": ["uniform", "interaction"]},
        "train.alpha": {"type": "float", "low": 0.0, "high": 5.0},
    },
}


def _space():
    return parse_space(SPACE, "test-space.yaml").with_base(dataset="synthetic-tiny")


def _result(metrics, config=None, trial_id="x", error=None):
    return SimpleNamespace(metrics=metrics, config=config if config is not None else metrics.get("config"),
                           path=f"/runs/s/trial_fn_{trial_id}_00000_0_x", error=error, checkpoint=None)


class _Grid(list):
    """A ResultGrid stand-in: Results plus the experiment analysis' Trials, in the same order."""

    def __init__(self, results, trials=None):
        super().__init__(results)
        if trials is not None:
            self._experiment_analysis = SimpleNamespace(trials=trials)


def _grid():
    cfg_a = {"train.weighting": "uniform", "train.alpha": 1.5}
    cfg_b = {"train.weighting": "interaction", "train.alpha": 3.25}
    cfg_c = {"train.weighting": "interaction", "train.alpha": 0.5}
    done = {"trial_id": "aaaa1", "final": True, "stop_reason": "completed", "best_val_map": 0.5, "test_map": 0.4,
            "epochs_run": 3, "epoch": 3, "node_id": "ab" * 28, "node_host": "gpu-worker-1",
            "node_address": "10.0.0.11", "hostname": "trial-driver", "node_ip": "10.0.0.99", "config": cfg_a}
    # written before node_host/node_address existed: Tune's own hostname / node_ip are the fallback
    old = {"trial_id": "cccc3", "final": True, "stop_reason": "completed", "best_val_map": 0.3, "test_map": 0.2,
           "epochs_run": 3, "epoch": 3, "node_id": "cd" * 28, "hostname": "cpu-worker-2", "node_ip": "10.0.0.12",
           "config": cfg_c}
    results = [_result(done, trial_id="aaaa1"), _result({}, trial_id="bbbb2"), _result(old, trial_id="cccc3")]
    trials = [SimpleNamespace(trial_id="aaaa1", config=cfg_a), SimpleNamespace(trial_id="bbbb2", config=cfg_b),
              SimpleNamespace(trial_id="cccc3", config=cfg_c)]
    return _Grid(results, trials)


def _plain(text: str) -> str:
    """Rich help / tables as one line of words (box characters and wrapping removed)."""
    return " ".join(re.sub(r"[│╭╮╰╯─┃━┏┓┗┛┡┩└┘┌┐|]", " ", text).split())


def test_parameter_columns_follow_the_space_whatever_the_trials_order():
    """A conditional parameter absent in the first trial once landed after the others (a resumed
    sweep, restored in another order, printed omega next to alpha): the space's order now."""
    spec = json.loads(json.dumps(SPACE))
    spec["params"] = {"train.weighting": SPACE["params"]["train.weighting"],
                      "train.omega": {"type": "float", "low": 1.0, "high": 9.0, "when": {"train.weighting": ["interaction"]}},
                      "train.alpha": SPACE["params"]["train.alpha"]}
    space = parse_space(spec, "s.yaml").with_base(dataset="synthetic-tiny")
    a = {"train.weighting": "uniform", "train.alpha": 1.0}
    b = {"train.weighting": "interaction", "train.omega": 2.0, "train.alpha": 2.0}
    m = {"final": True, "best_val_map": 0.5, "test_map": 0.4, "epochs_run": 3, "epoch": 3}
    for order in ((a, b), (b, a)):
        grid = _Grid([_result({**m, "config": c}, trial_id=f"t{i}") for i, c in enumerate(order)])
        cols = [c for c in results_frame(grid, space, scheduler="none").columns if c.startswith("train.")]
        assert cols == ["train.weighting", "train.omega", "train.alpha"], cols


@pytest.mark.timeout(60)
def test_node_host_and_ip_in_results_parquet_and_results_command(tmp_path):
    df = results_frame(_grid(), _space(), scheduler="none", retries={"cccc3": 2})
    assert {"node", "host", "node_ip"} <= set(df.columns) and {"host", "node_ip"} <= set(EXTRA_COLUMNS)
    row = df.set_index("trial_id")
    # the trial's own report wins over Tune's (the trial actor's node, not a DDP trial's workers')
    assert row.loc["aaaa1", "host"] == "gpu-worker-1" and row.loc["aaaa1", "node_ip"] == "10.0.0.11"
    assert row.loc["aaaa1", "node"] == "ab" * 28  # the Ray node id stays
    assert row.loc["cccc3", "host"] == "cpu-worker-2" and row.loc["cccc3", "node_ip"] == "10.0.0.12"
    # an interrupted trial (never reported) keeps its known config instead of '-' everywhere
    assert row.loc["bbbb2", "stop_reason"] == "interrupted"
    assert row.loc["bbbb2", "train.alpha"] == 3.25 and row.loc["bbbb2", "train.weighting"] == "interaction"
    assert json.loads(row.loc["bbbb2", "config"])["train"]["alpha"] == 3.25

    write_results(df, tmp_path)
    disk = load_results(tmp_path)
    assert disk.set_index("trial_id").loc["aaaa1", ["host", "node_ip"]].tolist() == ["gpu-worker-1", "10.0.0.11"]

    r = CliRunner().invoke(app, ["results", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    out = _plain(r.output)
    assert " node" in out and "gpu-worker-1" in out and "cpu-worker-2" in out, r.output
    assert "retries" in out, r.output  # cccc3 was restarted twice
    r = CliRunner().invoke(app, ["results", str(tmp_path), "--json"])
    recs = {x["trial_id"]: x for x in json.loads(r.output)}
    assert recs["aaaa1"]["host"] == "gpu-worker-1" and recs["aaaa1"]["node_ip"] == "10.0.0.11"


def _frame(retries=(0, 0, 0), hosts=("h1", "h1", "h2")) -> pd.DataFrame:
    rows = []
    for i, (n, h) in enumerate(zip(retries, hosts)):
        run = RunConfig(dataset="synthetic-tiny", train=TrainConfig(backbone="tiny_cnn"))
        rows.append({"trial_id": f"t{i}", "method": "mtl", "weighting": "uniform", "best_val_map": 0.5 - i / 10,
                     "test_map": 0.4, "epochs_run": 3, "stop_reason": "completed", "wall_time_s": 2.0,
                     "train_time_s": 1.0, "retries": n, "node": f"{i:02d}" * 28, "host": h,
                     "node_ip": f"10.0.0.{i}", "config": json.dumps(to_dict(run))})
    return pd.DataFrame(rows)


def _table(df: pd.DataFrame) -> str:
    con = Console(width=220, record=True)
    con.print(results_table(df))
    return con.export_text()


@pytest.mark.timeout(60)
def test_retries_column_only_when_a_trial_restarted():
    header = _table(_frame()).splitlines()[2]
    assert "retries" not in header and "node" in header
    text = _table(_frame(retries=(0, 3, 0)))
    header = text.splitlines()[2]
    assert "retries" in header
    t1 = next(ln for ln in text.splitlines() if " t1 " in ln)
    assert re.search(r"\b3\b", t1.split("completed", 1)[1]), t1
    # no node recorded (an old results.parquet): no node column
    old = _frame().drop(columns=["node", "host", "node_ip"])
    assert "node" not in _table(old).splitlines()[2]


@pytest.mark.timeout(60)
def test_node_labels_tell_nodes_apart():
    # two Ray nodes on one machine (same host and IP): the node id's prefix tells them apart
    df = pd.DataFrame({"host": ["m", "m", "k"], "node_ip": ["1.1.1.1"] * 2 + ["2.2.2.2"],
                       "node": ["aaaaaa11", "bbbbbb22", "cccccc33"]})
    assert node_labels(df).tolist() == ["m#aaaaaa", "m#bbbbbb", "k"]
    # one host name on several IPs (containers): host/IP
    df = pd.DataFrame({"host": ["pod", "pod"], "node_ip": ["10.0.0.1", "10.0.0.2"], "node": ["a", "b"]})
    assert node_labels(df).tolist() == ["pod/10.0.0.1", "pod/10.0.0.2"]
    # nothing known; only a node id (written before host/IP were recorded)
    assert node_labels(pd.DataFrame({"node": [None, "0123456789abcdef"]})).tolist() == ["-", "01234567"]


@pytest.mark.timeout(60)
def test_node_location_outside_ray_names_the_host():
    loc = node_location()
    assert loc["node_host"] and set(loc) == {"node_host", "node_address"}


def _trials(*statuses):
    return [SimpleNamespace(status=s, last_result={}) for s in statuses]


@pytest.mark.timeout(60)
def test_status_lines_off_a_terminal():
    from raysearch.search.live import sweep_progress

    out = io.StringIO()  # not a terminal (isatty False): plain lines, no redraw
    cb = sweep_progress(total=3, interval_s=0.2, stream=out)
    trials = _trials("RUNNING", "PENDING", "PENDING")
    cb.on_trial_start(0, trials, trials[0])
    cb.on_trial_result(0, trials, trials[0], {"val_map": 0.25, "best_val_map": 0.25})
    end = time.monotonic() + 1.1
    while time.monotonic() < end:  # Tune's loop steps even when no trial reports (long epochs)
        cb.on_step_end(0, trials)
        time.sleep(0.02)
    trials[0].status, trials[0].last_result = "TERMINATED", {"final": True}
    cb.on_trial_complete(0, trials, trials[0])
    cb.on_experiment_end(trials)
    lines = out.getvalue().splitlines()
    assert 5 <= len(lines) <= 9, lines  # one at the start, every 0.2 s, one at the end
    assert all(re.fullmatch(r"\[\d\d:\d\d:\d\d\] sweep status: trials \d/3: .*left", ln) for ln in lines), lines
    assert "\x1b" not in out.getvalue()  # plain text: no terminal control codes in a CI log
    assert "running 1" in lines[0] and "best val mAP 0.2500" in lines[1]
    assert lines[-1].split("] ", 1)[1].startswith("sweep status: trials 1/3: running 0, done 1")

    # a resumed sweep: trials that ended before the restore count from the first line
    resumed = io.StringIO()
    cb = sweep_progress(total=3, interval_s=60, stream=resumed)
    old = [SimpleNamespace(status="TERMINATED", last_result={"final": True, "best_val_map": 0.31}),
           SimpleNamespace(status="TERMINATED", last_result={"asha_stopped": True, "val_map": 0.2}),
           SimpleNamespace(status="PENDING", last_result={})]
    cb.on_step_end(0, old)
    assert "trials 2/3: running 0, done 1, asha-stopped 1" in resumed.getvalue(), resumed.getvalue()
    assert "best val mAP 0.3100" in resumed.getvalue()  # was "-" until a new result came

    quiet = io.StringIO()
    cb = sweep_progress(total=3, interval_s=0, stream=quiet)  # --status-every 0: none
    cb.on_trial_start(0, trials, trials[0])
    cb.on_step_end(0, trials)
    cb.on_experiment_end(trials)
    assert quiet.getvalue() == ""


@pytest.mark.timeout(60)
def test_status_every_is_a_tune_option_and_checkpoint_spacing_is_explained():
    from raysearch.search.live import STATUS_EVERY_S
    from raysearch.search.tune import SweepConfig

    assert SweepConfig().status_every == STATUS_EVERY_S == 60.0
    assert SweepConfig(checkpoint_overhead=0).checkpoint_overhead == 0
    r = CliRunner().invoke(app, ["tune", "--help"], env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    text = _plain(r.output)
    assert "--status-every" in text and "plain line" in text
    assert "--checkpoint-overhead" in text and "0: no spacing" in text
    assert "Saves are spaced by cost" in text and "20x what a save costs" in text
    assert "--checkpoint-mtbf" in text and "Young's optimal interval" in text
    assert SweepConfig().checkpoint_mtbf == 600.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--checkpoint-mtbf"):
            SweepConfig(checkpoint_mtbf=bad)
    r = CliRunner().invoke(app, ["experiment", "--help"], env={"COLUMNS": "120"})
    assert "Saves are spaced by cost" in _plain(r.output)
    r = CliRunner().invoke(app, ["tune", "--status-every", "-1"])
    assert r.exit_code != 0 and "--status-every must be a number >= 0, got -1.0" in r.output
    # NaN once passed every check and the sweep waited forever for GPUs no node has
    r = CliRunner().invoke(app, ["tune", "--gpus-per-trial", "nan"])
    assert r.exit_code != 0 and "--gpus-per-trial must be a finite number >= 0, got nan" in r.output
    assert "Traceback" not in r.output


def _sweep_result(tmp_path: Path, interrupted: bool, best: bool):
    from raysearch.search.tune import SweepResult

    df = _frame()
    if not best:
        df["stop_reason"] = "interrupted"
    run_dir = tmp_path / "my-sweep"
    return SweepResult(run_dir=run_dir, results=df, best_yaml=run_dir / "best.yaml" if best else None,
                       wall_time_s=12.0, interrupted=interrupted)


@pytest.mark.timeout(60)
def test_resume_hint_repeats_address_storage_and_data_root(tmp_path, capsys):
    from raysearch._cli.search import _print_sweep, resume_hint
    from raysearch.search.tune import SweepConfig

    cfg = SweepConfig(dataset="synthetic-tiny", name="my-sweep", address="ray://head:10001",
                      storage="s3://bucket/runs", data_root="/data/my home")
    hint = resume_hint(cfg, "my-sweep")
    assert hint == ("raysearch tune --dataset synthetic-tiny --name my-sweep --resume --address ray://head:10001 "
                    "--storage s3://bucket/runs --data-root '/data/my home'")
    assert resume_hint(SweepConfig(dataset="d"), "n") == "raysearch tune --dataset d --name n --resume"

    _print_sweep(_sweep_result(tmp_path, interrupted=True, best=True), cfg, top=10)
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "continue with" in ln)  # one line: it can be copied
    assert hint in line, out
    assert "results.parquet, best.yaml" in out


@pytest.mark.timeout(60)
def test_summary_names_the_rungs_that_stopped_trials(tmp_path, capsys):
    """An ASHA-stopped trial can show a higher val mAP than the pick: the summary says which metric
    the rungs judged on (a space's asha.metric is not a flag the user typed)."""
    import dataclasses

    from raysearch._cli.search import _print_sweep
    from raysearch.search.tune import SweepConfig

    res = _sweep_result(tmp_path, interrupted=False, best=True)
    res.results.loc[0, "stop_reason"] = "asha_stopped"
    _print_sweep(dataclasses.replace(res, asha={"grace_period": 1, "reduction_factor": 5, "metric": "val_auc"}),
                 SweepConfig(dataset="d"), top=10)
    out = capsys.readouterr().out
    assert "ASHA (grace 1, reduction factor 5, rungs judged on val_auc) stopped 1 of 3 trials" in out, out
    _print_sweep(res, SweepConfig(dataset="d"), top=10)  # res.asha None (no ASHA): no such line
    assert "rungs judged" not in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_closing_line_names_best_yaml_only_when_written(tmp_path, capsys):
    from raysearch._cli.search import _print_sweep
    from raysearch.search.tune import SweepConfig

    _print_sweep(_sweep_result(tmp_path, interrupted=True, best=False), SweepConfig(dataset="d"), top=10)
    out = capsys.readouterr().out
    closing = next(ln for ln in out.splitlines() if ln.startswith("run directory:"))
    assert "no best.yaml" in closing and "results.parquet, best.yaml" not in closing
    assert "best config" not in out


@pytest.mark.timeout(60)
def test_restart_warning_keeps_the_whole_error_path():
    path = "/very/long/storage/path/" + "x" * 120 + "/trial_fn_abc12_00000_0/error.txt"

    class Trial:
        error_file = path

        def get_pickled_error(self):
            return RuntimeError("Traceback ...\n  line\nNodeDiedError: node 10.0.0.5 died")

        def get_error(self):
            return None

    line = trial_failure(Trial())
    assert line == f"NodeDiedError: node 10.0.0.5 died; trace: {path}"
    gone = SimpleNamespace(error_file=None, get_pickled_error=lambda: None, get_error=lambda: None)
    assert trial_failure(gone) == "node lost"


def test_a_ddp_or_gpu_trial_driver_takes_no_cpu():
    """The driver of a TorchTrainer trial reserves no CPU: with --cpus-per-trial equal to a GPU node's
    CPUs, the node's own worker always fits next to any number of other trials' drivers."""
    from raysearch.search.cluster import trial_resources, worker_cpus

    driver = trial_resources(True, 8, 1)
    assert driver.get("cpu", 0) == 0 and driver.get("gpu", 0) == 0 and sum(driver.values()) > 0
    assert worker_cpus(8, 1) == 8 and worker_cpus(8, 2) == 4
    assert trial_resources(False, 2, 0) == {"cpu": 2, "gpu": 0}


def test_ddp_trials_take_the_checkpoint_budget_and_the_training_settings():
    """A TorchTrainer trial's workers get what a function trial gets: the checkpoint cost budget
    (rank 0 decides the cadence) and the run itself."""
    from raysearch.config import RunConfig, TrainConfig
    from raysearch.search.trainables import torch_trainer

    run = RunConfig(dataset="synthetic-tiny")
    t = torch_trainer(run, workers=2, cpus_per_worker=1.0, gpus_per_worker=0.0, shared_actor="owner", name="n",
                      storage="/tmp/x", callbacks=[], checkpoint_overhead=0.1)
    cfg = t.train_loop_config
    assert cfg["checkpoint_overhead"] == 0.1 and cfg["checkpoint_every"] == 1 and cfg["run"]["dataset"] == "synthetic-tiny"
    assert t.scaling_config.num_workers == 2 and t.scaling_config.placement_strategy == "PACK"
    # each worker trains with the CPUs it reserves, recorded in the run (a best.yaml's own count is replaced)
    assert cfg["run"]["train"]["threads"] == 1
    pinned = RunConfig(dataset="synthetic-tiny", train=TrainConfig(threads=8))
    t3 = torch_trainer(pinned, workers=2, cpus_per_worker=3.0, gpus_per_worker=0.0, shared_actor="owner", name="n",
                       storage="/tmp/x", callbacks=[])
    assert t3.train_loop_config["run"]["train"]["threads"] == 3
