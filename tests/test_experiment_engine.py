"""``raysearch experiment`` on the sweep's engine, tested as it runs: nested tuning end to end, a
unit killed mid-run resuming from its checkpoint (GPU units on a real multi-node cluster with
logical GPUs: ``tests/test_cluster.py``)."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml



def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

pytestmark = [pytest.mark.slow]

TINY = {"dataset": "synthetic-tiny",
        "train": {"backbone": "tiny_cnn", "weights": "none", "image_size": 16, "epochs": 2, "batch_size": 32,
                  "patience": 20, "device": "cpu"},
        "cf": {"model": "bpr", "epochs": 3, "dim": 8}}
SPACE = {"base": {k: v for k, v in TINY.items() if k != "dataset"},
         "params": {"train.weighting": {"type": "categorical", "choices": ["uniform", "interaction"]},
                    "train.alpha": {"type": "float", "low": 0.1, "high": 3.0},
                    "train.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
         "asha": {"grace_period": 1, "reduction_factor": 2}}


def _yaml(tmp_path: Path, name: str, data: dict) -> str:
    data = {k: v for k, v in data.items() if v is not None}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return str(p)


@pytest.mark.timeout(500)
def test_nested_tuning_inner_trials_see_only_the_outer_train_and_val(tmp_path, ray_session, monkeypatch):
    """--tune 3: one inner sweep per (fold, arm); every inner trial's split is the fold's inner view
    (no outer test item in any role), the same trial budget for every arm, and each unit runs the
    configuration its fold's inner search chose."""
    from typer.testing import CliRunner

    from raysearch.cli import app
    from raysearch.config import RunConfig, from_dict
    from raysearch.data import load_dataset
    from raysearch.data.splits import make_split

    import raysearch.search.trainables as trainables
    from raysearch.experiment.protocol import UnitGrid

    built = []
    real = trainables.with_resources

    def spy(ctx):  # one trial engine: the inner sweeps' trials and the units come from the same builder
        built.append(type(ctx.space).__name__)
        return real(ctx)

    monkeypatch.setattr(trainables, "with_resources", spy)
    out = tmp_path / "exp"
    r = CliRunner().invoke(app, [
        "experiment", "--dataset", "synthetic-tiny", "--tune", "3", "--tune-space", _yaml(tmp_path, "space.yaml", SPACE),
        "--variants", "image_only,mtl:uniform", "--folds", "2", "--seeds", "1", "--label-ratios", "0.5",
        "--n-boot", "100", "--no-cf-tables", "--no-wandb", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert built.count("SearchSpace") == 4 and built.count(UnitGrid.__name__) == 1, built
    ds = load_dataset("synthetic-tiny")
    meta = json.loads((out / "experiment.json").read_text())
    assert set(meta["tuned"]) == {f"r0.5-f{f}-{v}" for f in (0, 1) for v in ("image_only", "mtl-uniform")}
    units = pd.read_parquet(out / "experiment.parquet")
    for key, t in meta["tuned"].items():
        inner = pd.read_parquet(out / "tuning" / key / "results.parquet")
        assert len(inner) == 3, key  # the same budget for every arm
        outer_test = make_split(ds, from_dict(RunConfig, json.loads(
            units[(units["fold"] == t["fold"])]["config"].iloc[0])).split).test
        for cfg in inner["config"]:
            run = from_dict(RunConfig, json.loads(cfg))
            assert run.split.inner and run.split.fold == t["fold"]
            sp = make_split(ds, run.split)
            assert not np.isin(np.concatenate([sp.train, sp.val, sp.test]), outer_test).any()
            assert run.train.weighting == ("uniform" if t["variant"] != "image_only" else run.train.weighting)
        # the unit trained the chosen configuration (its own seed and the outer split aside)
        unit = from_dict(RunConfig, json.loads(units[(units["fold"] == t["fold"]) & (units["variant"] == t["variant"])]
                                               ["config"].iloc[0]))
        chosen = from_dict(RunConfig, t["run"])
        assert (unit.train.alpha, unit.train.lr) == (chosen.train.alpha, chosen.train.lr)
        assert not unit.split.inner and unit.split.fold == t["fold"]
    assert (out / "tuning.parquet").is_file()
    assert "Configuration chosen by each inner search" in (out / "summary.md").read_text()


@pytest.mark.timeout(400)
def test_unit_killed_mid_run_resumes_from_its_checkpoint(tmp_path, ray_session):
    """SIGKILL a unit's worker process after a per-epoch checkpoint: --max-failures restarts it from
    that checkpoint (resumed_from_epoch > 0), and the experiment completes every unit."""
    from typer.testing import CliRunner

    from raysearch.cli import app

    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(epochs=600, patience=600, image_size=32)  # ~5 s: long enough to be killed mid-run
    out = tmp_path / "exp"
    killed: dict[str, int] = {}

    def kill_after_checkpoint() -> None:
        # A unit persists its checkpoint to the storage path itself, during its report; the driver
        # registers it, and the experiment snapshot that forces then syncs the unit's result.json
        # (otherwise synced only by the periodic snapshot).  So once a unit's synced result.json names
        # a checkpoint holding a train state, and its last line is recent and not final, SIGKILL that
        # unit's process (result.json names it).  Recent: a stale line of a finished unit would name
        # the reused process already running the next unit, which may not have saved yet.
        deadline, seen = time.time() + 300, {}
        while time.time() < deadline and not killed:
            for result_json in (out / "trials").glob("*/result.json"):
                try:  # the sync rewrites the file: a torn read is retried at the next poll
                    lines = [json.loads(x) for x in result_json.read_text().splitlines() if x.strip()]
                    named = {x["checkpoint_dir_name"] for x in lines if x.get("checkpoint_dir_name")}
                    last = lines[-1] if lines else {}
                    fresh = time.time() - float(last.get("timestamp", 0)) < 3.0 and not last.get("final")
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                if fresh and any((result_json.parent / n / "train_state.pt").is_file() for n in named):
                    seen.setdefault(result_json, time.time())
                if not fresh or time.time() - seen.get(result_json, time.time()) < 0.3:
                    continue
                pid = int(last["pid"])
                if "ray::ImplicitFunc" in _cmdline(pid):  # still this unit's trial process
                    killed["pid"] = pid
                    os.kill(pid, signal.SIGKILL)
                    return
            time.sleep(0.1)

    threading.Thread(target=kill_after_checkpoint, daemon=True).start()
    r = CliRunner().invoke(app, [
        "experiment", "--dataset", "synthetic-tiny", "--config", _yaml(tmp_path, "c.yaml", cfg), "--variants",
        "mtl:uniform", "--folds", "2", "--seeds", "1", "--label-ratios", "1.0", "--max-failures", "2",
        "--n-boot", "100", "--no-cf-tables", "--no-wandb", "--out", str(out), "--json"])
    assert killed, "no unit reached a checkpoint to kill"
    assert r.exit_code == 0, r.output
    units = pd.read_parquet(out / "experiment.parquet")
    assert (units["stop_reason"].isin(["completed", "early_stopped"])).all(), units
    assert (units["resumed_from_epoch"] > 0).any(), (killed, units[["fold", "resumed_from_epoch"]],
                                                      (out / "retries.ids").read_text() if (out / "retries.ids").is_file() else None)
    retries = json.loads((out / "retries.ids").read_text())
    assert sum(retries.values()) >= 1


# GPU units on a real multi-node cluster with logical GPUs: tests/test_cluster.py::
# test_gpu_trials_never_strand_a_gpu_node (one cluster for the sweep's and the experiment's GPU trials)
