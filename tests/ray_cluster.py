"""Real multi-node Ray clusters on this machine for tests: a head and worker nodes, each a separate
``ray start --block`` process group with its own environment (``RAYSEARCH_HOME`` above all), on
explicit free ports so that no other Ray instance on the machine is ever joined or touched.

Nodes are stopped (or killed, to simulate a lost machine) by their own process-group id, never
with ``ray stop``, which would kill every Ray process on the machine.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    import ray.util  # public: the same function as Ray's private services.get_node_ip_address

    return ray.util.get_node_ip_address()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children of children too), from ``pgrep -P``."""
    out, todo = [], [pid]
    while todo:
        r = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True)
        kids = [int(p) for p in r.stdout.split()]
        out += kids
        todo += kids
    return out


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    home: Path
    log: Path
    node_manager_port: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the node as a lost machine dies: its process group (raylet, object store) and every
        descendant, including workers in sessions of their own (which would otherwise keep training
        and reporting until the GCS notices the node is gone)."""
        procs = _descendants(self.proc.pid)
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        for pid in procs:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def raylet_pid(self) -> int | None:
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid), "-f", "raylet/raylet"], capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split()]
        return pids[0] if pids else None


@dataclass
class LocalCluster:
    """Start with :meth:`start_head`, add :meth:`add_worker`\\ s, always :meth:`shutdown`."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0
    temp_dir: str = ""

    @property
    def address(self) -> str:
        return f"{node_ip()}:{self.gcs_port}"

    def _env(self, home: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.update({"RAYSEARCH_HOME": str(home), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
        env.pop("RAY_ADDRESS", None)
        return env

    def _start(self, name: str, home: Path, args: list[str]) -> Node:
        home.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        nm_port = free_port()
        ports = ["--node-manager-port", str(nm_port), "--object-manager-port", str(free_port()),
                 "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
                 "--dashboard-agent-grpc-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port())]
        # a temp dir of its own (short: Ray's socket paths must fit 107 bytes): a shared one would
        # leave its `ray_current_cluster` for a later plain ray.init() to "connect" to
        if not self.temp_dir:
            import tempfile

            self.temp_dir = tempfile.mkdtemp(prefix="rsc-", dir="/tmp")
        tmp = self.temp_dir
        cmd = [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={tmp}", *ports, *args]
        proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=self._env(home),
                                start_new_session=True)
        node = Node(name, proc, home, log, nm_port)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int, home: Path, dashboard: bool = True, extra: list[str] = ()) -> Node:
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        args = ["--head", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
                f"--ray-client-server-port={free_port()}", *extra]
        if dashboard:
            args += ["--include-dashboard=true", f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1"]
        else:
            args += ["--include-dashboard=false"]
        head = self._start("head", home, args)
        self.wait_nodes(1)
        return head

    def add_worker(self, num_cpus: int, home: Path, name: str | None = None, wait: bool = True,
                   num_gpus: int = 0) -> Node:
        """``num_gpus`` > 0: logical GPUs (``ray start --num-gpus``), to test GPU scheduling on CPUs."""
        n_before = len(self.alive_nodes())
        node = self._start(name or f"worker{len(self.nodes)}", home,
                           [f"--address={self.address}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}"])
        if wait:
            self.wait_nodes(n_before + 1)
        return node

    def node_id(self, node: Node) -> str:
        """The Ray node id of one of our nodes (matched by its node-manager port)."""
        for n in self.alive_nodes():
            if int(n.get("NodeManagerPort", -1)) == node.node_manager_port:
                return n["NodeID"]
        raise KeyError(node.name)

    def alive_nodes(self) -> list[dict]:
        """Alive nodes as the GCS sees them (asked from a subprocess: the test process may not be a driver)."""
        code = ("import ray, json; ray.init(address=%r, log_to_driver=False, logging_level='ERROR'); "
                "print(json.dumps([n for n in ray.nodes() if n['Alive']], default=str))") % self.address
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=self._env(self.root / "probe-home"))
        import json

        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
        return json.loads(lines[-1]) if lines else []

    def wait_nodes(self, n: int, timeout: float = 90.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            dead = [x for x in self.nodes if not x.alive()]
            if dead:
                raise RuntimeError(f"node {dead[0].name} exited: {dead[0].log.read_text()[-2000:]}")
            try:
                if len(self.alive_nodes()) >= n:
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"cluster did not reach {n} nodes in {timeout} s")

    def shutdown(self) -> None:
        import shutil

        for node in reversed(self.nodes):
            node.kill(signal.SIGTERM)
        # a test's cluster holds nothing worth a graceful exit: `ray start --block` spends ~15 s
        # shutting a node down on SIGTERM, so whatever still runs after 3 s is killed
        deadline = time.time() + 3
        for node in self.nodes:
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                node.kill(signal.SIGKILL)
                node.proc.wait(timeout=10)
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
