"""An autoscaled sweep on this machine: Ray's real autoscaler with the ``fake_multinode`` provider
(``cluster/local-autoscale.yaml``), worker nodes launched as local processes.

The head offers no CPUs, no worker node exists at the start; ``raysearch tune --max-concurrent 2``
must make the autoscaler launch worker nodes, trials must run there, and the nodes must be
removed after the idle timeout.  Only this test's processes are stopped, by PID.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.ray_cluster import LocalCluster, free_port, node_ip
from tests.test_cluster import RAYSEARCH, _space

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow]


def _pids_with(text: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split() if int(p) != os.getpid()]


@pytest.mark.timeout(600)
def test_autoscaler_launches_workers_for_trials_and_removes_them(tmp_path):
    cfg = yaml.safe_load((REPO / "cluster" / "local-autoscale.yaml").read_text())
    cluster = LocalCluster(root=tmp_path, env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    port = free_port()
    cfg["provider"]["gcs_address"] = f"{node_ip()}:{port}"
    cfg_path = tmp_path / "autoscale.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    head_home = tmp_path / "head"
    timeline: dict[str, float] = {}
    try:
        cluster.gcs_port = port
        cluster._start("head", head_home, ["--head", f"--port={port}", "--num-cpus=0", "--num-gpus=0",
                                            f"--ray-client-server-port={free_port()}", "--include-dashboard=false",
                                            f"--autoscaling-config={cfg_path}"])
        cluster.wait_nodes(1)
        assert len(cluster.alive_nodes()) == 1  # the head only: no worker node at the start
        env = cluster._env(head_home)
        cmd = [RAYSEARCH, "tune", "--dataset", "synthetic-tiny", "--address", cluster.address,
               "--space", _space(tmp_path, epochs=2), "--trials", "4", "--max-concurrent", "2",
               "--storage", str(tmp_path / "runs"), "--name", "auto", "--no-wandb", "--json"]
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        peak = 1
        while proc.poll() is None and time.time() - t0 < 420:
            n = len(cluster.alive_nodes())
            if n > 1 and "scale_up_s" not in timeline:
                timeline["scale_up_s"] = time.time() - t0
            peak = max(peak, n)
            time.sleep(1.0)
        out, err = proc.communicate(timeout=30)
        timeline["sweep_s"] = time.time() - t0
        assert proc.returncode == 0, err[-3000:]
        df = pd.read_parquet(Path(json.loads(out)["run_dir"]) / "results.parquet")
        assert len(df) == 4 and (df["stop_reason"] != "error").all(), df
        assert peak >= 2 and "scale_up_s" in timeline, "the autoscaler never launched a worker node"
        # idle nodes are removed after idle_timeout_minutes (15 s) + the update interval
        t1 = time.time()
        while time.time() - t1 < 180 and len(cluster.alive_nodes()) > 1:
            time.sleep(2.0)
        timeline["scale_down_s"] = time.time() - t1
        assert len(cluster.alive_nodes()) == 1, "idle worker nodes were not removed"
        print(f"autoscaling timeline: {timeline}, peak nodes {peak}")
        (tmp_path / "timeline.json").write_text(json.dumps(timeline))
    finally:
        cluster.shutdown()
        # fake worker nodes are started by the autoscaler process: stop them by PID too
        for pid in _pids_with(f":{port}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
