"""Sweeps on real multi-node Ray clusters started on this machine (``tests/ray_cluster.py``).

The head offers no CPUs to trials (as in ``cluster/``), so every trial runs on a worker node whose
``RAYSEARCH_HOME`` is empty: the data must come from the head's data owner.  Each sweep runs as
``raysearch tune --address`` in a subprocess, bounded by a timeout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raysearch.search.tracking import offline_runs
from tests.ray_cluster import LocalCluster
from tests.wandb_offline import read_run

pytestmark = [pytest.mark.slow]

RAYSEARCH = str(Path(sys.executable).with_name("raysearch"))

SPACE = {
    "base": {
        "train": {"method": "mtl", "backbone": "tiny_cnn", "weights": "none", "image_size": 16, "epochs": 4,
                  "batch_size": 32, "patience": 10},
        "cf": {"model": "bpr", "epochs": 5, "dim": 8},
    },
    "params": {
        "train.alpha": {"type": "float", "low": 0.0, "high": 3.0},
        "train.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    },
    "asha": {"grace_period": 1, "reduction_factor": 2},
}


def _space(tmp_path: Path, **base_train) -> str:
    data = json.loads(json.dumps(SPACE))
    data["base"]["train"].update(base_train)
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(p)


def _tune(cluster: LocalCluster, head_home: Path, tmp_path: Path, *args: str, timeout: float = 400,
          on_start=None) -> tuple[subprocess.CompletedProcess, pd.DataFrame | None]:
    env = cluster._env(head_home)
    cmd = [RAYSEARCH, "tune", "--dataset", "synthetic-tiny", "--address", cluster.address,
           "--storage", str(tmp_path / "runs"), "--json", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if on_start is not None:
        threading.Thread(target=on_start, daemon=True).start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"sweep hung (> {timeout} s); stderr tail:\n{err[-3000:]}")
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if proc.returncode != 0:
        return done, None
    run_dir = Path(json.loads(out)["run_dir"])
    return done, pd.read_parquet(run_dir / "results.parquet")


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(root=tmp_path)
    yield c
    c.shutdown()


def _files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file()]


@pytest.mark.timeout(600)
def test_multinode_sweep_trials_on_both_workers_homes_stay_empty(cluster, tmp_path):
    head_home, w1, w2 = tmp_path / "head", tmp_path / "w1", tmp_path / "w2"
    cluster.start_head(num_cpus=0, home=head_home, dashboard=False)
    cluster.add_worker(1, w1)
    cluster.add_worker(1, w2)
    r, df = _tune(cluster, head_home, tmp_path, "--space", _space(tmp_path), "--trials", "6",
                  "--max-concurrent", "2", "--name", "multi")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(df) == 6 and set(df["stop_reason"]) <= {"completed", "early_stopped", "asha_stopped"}, df
    assert (df["stop_reason"] == "completed").any()
    # both worker nodes ran trials (two 1-CPU nodes, two concurrent trials), never the head
    head_id = next(n["NodeID"] for n in cluster.alive_nodes() if n["Resources"].get("CPU", 0) == 0)
    nodes = set(df["node"].dropna())
    assert df["node"].notna().all() and len(nodes) == 2 and head_id not in nodes, df[["trial_id", "node"]]
    # the workers' homes stay empty: data came from the head through the object store
    assert _files(w1) == [] and _files(w2) == []
    # W&B (offline): one run per trial, all on the driver's machine under the run directory
    runs = offline_runs(tmp_path / "runs" / "multi")
    assert len(runs) == 6 and {r.name.rsplit("-", 1)[-1] for r in runs} == set(df["trial_id"])
    # logged by one process on the head (the sweep's W&B actor), each run with its epochs and stop reason
    logged = [read_run(r) for r in runs]
    assert len({x["pid"] for x in logged}) == 1 and logged[0]["pid"] is not None
    assert all(any("val_map" in h for h in x["history"]) and x["summary"].get("stop_reason") for x in logged)


@pytest.mark.timeout(600)
def test_node_loss_trials_resume_from_checkpoints(cluster, tmp_path):
    head_home, w1, w2 = tmp_path / "head", tmp_path / "w1", tmp_path / "w2"
    cluster.start_head(num_cpus=0, home=head_home, dashboard=False)
    victim = cluster.add_worker(1, w1, name="victim")
    cluster.add_worker(1, w2, name="survivor")
    space = _space(tmp_path, epochs=40, image_size=64, patience=0)
    killed = {}

    victim_id = cluster.node_id(victim)

    def kill_when_running():
        # lose the victim node once a trial running there has checkpointed its 2nd epoch
        deadline = time.time() + 300
        while time.time() < deadline:
            for result in (tmp_path / "runs" / "loss").glob("*/result.json"):
                lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
                checkpointed = any(x.get("checkpoint_dir_name") for x in lines)
                if lines and lines[-1].get("node_id") == victim_id and checkpointed and lines[-1].get("epoch", 0) >= 2 \
                        and not lines[-1].get("final"):
                    killed["trial"] = lines[-1].get("trial_id")
                    killed["epoch"] = int(lines[-1]["epoch"])
                    victim.kill()
                    return
            time.sleep(0.3)

    # --checkpoint-mtbf 0: saves spaced by the 5% budget alone, i.e. every few of these ~0.05 s epochs;
    # Young's interval (~4 s of training) would leave most trials here with no mid-trial checkpoint to lose
    r, df = _tune(cluster, head_home, tmp_path, "--space", space, "--trials", "4", "--max-concurrent", "2",
                  "--scheduler", "none", "--name", "loss", "--max-failures", "3", "--no-wandb", "--checkpoint-mtbf", "0",
                  on_start=kill_when_running)
    assert killed, "no trial reached a checkpoint to interrupt"
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(df) == 4, df
    assert set(df["stop_reason"]) <= {"completed", "early_stopped"}, df[["trial_id", "stop_reason", "error"]]
    retried = df[df["retries"] > 0]
    assert killed["trial"] in set(retried["trial_id"]), df[["trial_id", "retries", "resumed_from_epoch", "node"]]
    # the restarted trial did not start over: it resumed after a checkpointed epoch, or (lost right
    # after its final report) was restored as finished; either way epoch 1 ran once
    lines = [json.loads(x) for f in (tmp_path / "runs" / "loss").glob(f"*{killed['trial']}*/result.json")
             for x in f.read_text().splitlines() if x.strip()]
    assert [x["epoch"] for x in lines if not x.get("final")].count(1) == 1, retried[["trial_id", "resumed_from_epoch"]]
    assert (df["epochs_run"] >= 1).all()
    row = df.set_index("trial_id").loc[killed["trial"]]
    if row["resumed_from_epoch"] > 0:  # re-run from a checkpoint: it finished on the surviving node
        assert row["node"] != victim_id, row
    else:  # restored as finished: its node is where it trained, and no epoch ran after the kill
        assert max(x["epoch"] for x in lines if not x.get("final")) <= killed["epoch"] + 1, lines
    epochs = [x["epoch"] for x in lines if not x.get("final")]
    print(f"node loss: {len(df)} trials, {int(df['retries'].sum())} restart(s); the killed trial resumed after its "
          f"checkpointed epoch {int(row['resumed_from_epoch'])} of {int(row['epochs_run'])}, epochs reported twice "
          f"(re-run): {len(epochs) - len(set(epochs))}; stop reasons {df['stop_reason'].value_counts().to_dict()}")


def _placement_groups(cluster: LocalCluster) -> dict:
    code = ("import ray, json; ray.init(address=%r, log_to_driver=False, logging_level='ERROR'); "
            "from ray.util import placement_group_table; "
            "print(json.dumps({k: v['state'] for k, v in placement_group_table().items()}))") % cluster.address
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=cluster._env(cluster.root / "probe-home"))
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


@pytest.mark.timeout(600)
def test_ddp_sweep_asha_stops_trials_and_frees_placement_groups(cluster, tmp_path):
    head_home = tmp_path / "head"
    cluster.start_head(num_cpus=0, home=head_home, dashboard=True)
    cluster.add_worker(2, tmp_path / "w1")
    r, df = _tune(cluster, head_home, tmp_path, "--space", _space(tmp_path, epochs=3), "--trials", "3",
                  "--workers-per-trial", "2", "--cpus-per-trial", "2", "--max-concurrent", "1",
                  "--name", "ddp", "--no-wandb", "--seed", "1", "--rung-metric", "val_auc", timeout=500)
    assert r.returncode == 0, r.stderr[-3000:]
    # the rungs judge the val AUC each DDP worker's epoch report carries through TuneReportCallback
    assert json.loads(r.stdout)["asha"] == {"grace_period": 1, "reduction_factor": 2, "metric": "val_auc"}
    assert len(df) == 3 and set(df["stop_reason"]) <= {"completed", "early_stopped", "asha_stopped"}, df
    assert (df["stop_reason"] == "asha_stopped").sum() >= 1, df[["trial_id", "stop_reason", "epochs_run"]]
    assert df.loc[df["stop_reason"] == "completed", "test_map"].between(0, 1).all()
    # each DDP worker's share of the trial's CPUs (2 / 2) is the torch thread count its config records
    assert {json.loads(c)["train"]["threads"] for c in df["config"]} == {1}
    # every placement group (Tune's and Ray Train's) has been removed
    deadline = time.time() + 60
    while time.time() < deadline:
        left = {k: v for k, v in _placement_groups(cluster).items() if v != "REMOVED"}
        if not left:
            break
        time.sleep(2)
    assert not left, left


def _trial_intervals(run_dir: Path) -> list[tuple[float, float]]:
    """(start, end) wall-clock seconds of each trial, from Tune's own per-trial ``result.json``."""
    spans = []
    for f in sorted(run_dir.glob("*/result.json")):
        last = json.loads(f.read_text().strip().splitlines()[-1])
        spans.append((last["timestamp"] - last["time_total_s"], last["timestamp"]))
    return spans


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


@pytest.mark.timeout(420)
def test_nested_tuning_on_a_cluster_uses_the_head_starts(cluster, tmp_path):
    """experiment --tune on a head without CPUs and two 1-CPU workers: the background CF fits and
    the tuning's one data owner (both pinned to the head, no CPU reserved there) serve every inner
    trial and unit on the workers, whose homes stay empty."""
    head_home, w1, w2 = tmp_path / "head", tmp_path / "w1", tmp_path / "w2"
    cluster.start_head(num_cpus=0, home=head_home, dashboard=False)
    workers = {cluster.node_id(cluster.add_worker(1, w)) for w in (w1, w2)}
    space = tmp_path / "tune-space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "base": {**SPACE["base"], "train": {**SPACE["base"]["train"],
                                                                                   "epochs": 2}}}))
    out = tmp_path / "exp"
    p = subprocess.run([RAYSEARCH, "experiment", "--dataset", "synthetic-tiny", "--tune", "2", "--tune-space", str(space),
                        "--variants", "image_only,mtl:uniform", "--folds", "2", "--seeds", "1", "--label-ratios", "1.0",
                        "--address", cluster.address, "--n-boot", "100", "--no-cf-tables", "--no-wandb",
                        "--out", str(out), "--json"],
                       capture_output=True, text=True, env=cluster._env(head_home), timeout=380)
    assert p.returncode == 0, p.stderr[-3000:]
    inner = pd.concat([pd.read_parquet(f) for f in sorted((out / "tuning").glob("*/results.parquet"))])
    assert len(inner) == 8 and inner["stop_reason"].isin(["completed", "early_stopped", "asha_stopped"]).all(), inner
    assert set(inner["node"]) <= workers, inner[["trial_id", "node"]]
    units = pd.read_parquet(out / "experiment.parquet")
    assert len(units) == 2 * 2 and set(units["node"]) <= workers, units[["variant", "fold", "node"]]
    assert _files(w1) == [] and _files(w2) == []


@pytest.mark.timeout(600)
def test_gpu_trials_never_strand_a_gpu_node(cluster, tmp_path):
    """Two nodes with 1 CPU + 1 logical GPU each (and a CPU-only node): with --gpus-per-trial 1
    --cpus-per-trial 1, both sweep trials run at once, one per GPU node; a trial driver that took
    any CPU share could land on the node the other trial's worker needs and leave its GPU idle.
    Then the experiment's units on the same engine: every unit runs through the TorchTrainer path
    on a GPU node with GPU 0 assigned (train.device cpu, so it can train there), two at a time;
    the CPU-only node runs none."""
    head_home = tmp_path / "head"
    cluster.start_head(num_cpus=0, home=head_home, dashboard=True)
    cluster.add_worker(1, tmp_path / "cpu", name="cpu")
    gpu_nodes = {cluster.node_id(cluster.add_worker(1, tmp_path / f"g{i}", name=f"g{i}", num_gpus=1)) for i in (1, 2)}
    r, df = _tune(cluster, head_home, tmp_path, "--space", _space(tmp_path, epochs=3, device="cpu"),
                  "--trials", "2", "--gpus-per-trial", "1", "--cpus-per-trial", "1", "--name", "pack",
                  "--no-wandb", "--seed", "0", timeout=500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(df) == 2 and set(df["stop_reason"]) <= {"completed", "early_stopped", "asha_stopped"}, df
    assert set(df["node"]) == gpu_nodes, df[["trial_id", "node"]]
    a, b = _trial_intervals(tmp_path / "runs" / "pack")
    # both ran at once for most of the shorter trial (a stranded GPU makes them disjoint)
    assert _overlap(a, b) > 0.5 * min(a[1] - a[0], b[1] - b[0]), (a, b)
    print(f"packing: 2 trials on {df['node'].nunique()} nodes, overlap {_overlap(a, b):.1f} s of "
          f"{a[1] - a[0]:.1f} / {b[1] - b[0]:.1f} s")

    cfg = tmp_path / "unit.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "synthetic-tiny", **SPACE["base"]} | {
        "train": {**SPACE["base"]["train"], "epochs": 2, "device": "cpu"}}))
    out = tmp_path / "exp"
    env = cluster._env(head_home)
    env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{cluster.dashboard_port}"
    p = subprocess.run([RAYSEARCH, "experiment", "--dataset", "synthetic-tiny", "--config", str(cfg),
                        "--variants", "image_only,mtl:uniform", "--folds", "2", "--seeds", "1", "--label-ratios", "1.0",
                        "--gpus-per-trial", "1", "--cpus-per-trial", "1", "--address", cluster.address,
                        "--n-boot", "100", "--no-cf-tables", "--no-wandb", "--out", str(out), "--json"],
                       capture_output=True, text=True, env=env, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    units = pd.read_parquet(out / "experiment.parquet")
    assert len(units) == 4 and units["stop_reason"].isin(["completed", "early_stopped"]).all(), units
    assert (units["gpu_ids"] == "0").all(), units[["variant", "fold", "gpu_ids"]]
    assert set(units["node"]) <= gpu_nodes, units[["variant", "fold", "node"]]
