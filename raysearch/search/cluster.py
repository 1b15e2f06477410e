"""Ray start-up, resource checks and placement-group hygiene for sweeps.

Why these checks exist: Ray queues a request that no node can satisfy forever (a hang, not an
error), and Ray Train V2 frees a stopped trial's placement group through a cleaner that asks the
State API, which only exists when the dashboard runs (``ray[default]``); without it a DDP sweep
waits forever for CPUs that a stopped trial still holds.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

from raysearch import _ray_compat
from raysearch.config import ConfigError
from raysearch.errors import RaysearchError, RayStartError
from raysearch.search.shared import DATA_CPUS, NAMESPACE

log = logging.getLogger(__name__)

#: what a TorchTrainer trial's driver reserves: no CPU (it only waits on ``trainer.fit()``), so it can
#: never take the sliver of a GPU node that node's own worker needs (a stranded GPU); Tune refuses an
#: empty request, so it reserves a little of Ray's ``memory`` resource (bytes), which every node has
DRIVER_RESOURCES = {"cpu": 0, "memory": 64 * 2**20}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _api_server_url(address: str) -> str | None:
    """The dashboard (State API) URL of the cluster at ``address``, read from its GCS."""
    return _ray_compat.api_server_url(address)


def init_ray(address: str | None, dashboard: bool = False) -> None:
    """Join ``address`` or start a local instance sized to this machine.

    Locally the instance gets ``DATA_CPUS`` extra logical CPUs for the sweep's data owner (see
    :mod:`raysearch.search.shared`), and the dashboard (State API) only when DDP trials need it.
    Every process of the job is told which State API to ask (``RAY_API_SERVER_ADDRESS``): Ray
    Train's placement-group cleaner otherwise looks for "the" Ray instance on its machine and
    gives up when it finds several.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            url = _api_server_url(address) if "://" not in address else None
            env = {"RAY_API_SERVER_ADDRESS": url} if url else {}
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        else:
            kw: dict[str, Any] = {"include_dashboard": dashboard}
            env = {}
            if dashboard:
                kw["dashboard_port"] = _free_port()
                env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{kw['dashboard_port']}"
            # the W&B key stays in this process: a local Ray's raylet and every worker would inherit
            # it in their environment (the logging actor reads it from a private file instead)
            key = os.environ.pop("WANDB_API_KEY", None)
            try:
                ray.init(num_cpus=(os.cpu_count() or 1) + DATA_CPUS, namespace=NAMESPACE, log_to_driver=False,
                         runtime_env={"env_vars": env} if env else None, **kw)
            finally:
                if key is not None:
                    os.environ["WANDB_API_KEY"] = key
    except (RaysearchError, TypeError, AttributeError, NameError, ImportError):
        raise  # ours, or a bug in the call: keep the traceback
    except Exception as e:  # Ray raises bare Exception/RuntimeError/ConnectionError for start-up failures
        raise ray_start_error(e, address) from e
    os.environ.update(env)


#: Ray's setting for how long a starting node waits for its GCS (seconds; Ray's default 30)
GCS_WAIT_ENV = _ray_compat.GCS_WAIT_ENV


def _load() -> str:
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count() or 1} CPUs"
    except OSError:
        return "load unknown"


def ray_start_error(e: BaseException, address: str | None) -> RayStartError:
    """One line for a failed ``ray.init``: what failed, Ray's own first line, and what to do.

    A timed-out start (a loaded machine: "The current node timed out during startup") names the
    machine's load and the settings: the GCS wait is :data:`GCS_WAIT_ENV`; the raylet's 30 s
    registration wait is fixed in Ray's code (:data:`raysearch._ray_compat.GCS_WAIT_ENV`), so the way
    around it is a Ray started once, outside the command, and joined with ``--address auto``.
    """
    first = " ".join(str(e).split())[:300].rstrip(".") or "(no message)"
    cause = f"{type(e).__name__}: {first}"
    what = f"could not join Ray at {address!r}" if address else "could not start a local Ray instance"
    low = first.lower()
    if isinstance(e, TimeoutError) or "timed out" in low or "timeout" in low:
        hint = (f"Ray's start-up wait ran out ({_load()}): retry when the machine is less busy, or start Ray once "
                f"with `ray start --head` and pass --address auto; {GCS_WAIT_ENV}=SECONDS raises Ray's wait for its "
                "GCS (default 30), the raylet's 30 s registration wait is fixed in Ray")
    elif "gcs" in low:
        hint = (f"Ray's GCS did not answer ({_load()}); raise its wait with {GCS_WAIT_ENV}=SECONDS (default 30)"
                + ("" if address else f", or see the logs under {os.environ.get('RAY_TMPDIR', '/tmp')}/ray/session_latest/logs"))
    elif address:
        hint = "is a Ray cluster running there (`ray status --address ADDRESS`), and reachable from this machine?"
    else:
        hint = f"see Ray's logs under {os.environ.get('RAY_TMPDIR', '/tmp')}/ray/session_latest/logs"
    return RayStartError(f"{what}: {cause}. {hint}")


def state_api_available(timeout: float = 10.0) -> bool:
    """True when Ray's State API answers (the dashboard runs)."""
    try:
        from ray.util.state import list_nodes

        list_nodes(address=os.environ.get("RAY_API_SERVER_ADDRESS"), limit=1, timeout=int(max(1, timeout)),
                   raise_on_missing_output=False)
        return True
    except Exception:  # ImportError (minimal Ray), RayStateApiException, connection errors
        return False


def worker_cpus(cpus_per_trial: float, workers: int) -> float:
    """``--cpus-per-trial`` is the trial's total, split over its workers (the driver takes no CPU)."""
    return cpus_per_trial / workers


def trial_resources(distributed: bool, cpus_per_trial: float, gpus_per_trial: float) -> dict[str, float]:
    if distributed:
        # the trial itself only drives the TorchTrainer; its workers reserve the CPUs/GPUs
        return dict(DRIVER_RESOURCES)
    return {"cpu": cpus_per_trial, "gpu": gpus_per_trial}


def node_capacity() -> list[dict[str, float]]:
    """Per alive node, the CPUs/GPUs trials can use (the data owner's reservation taken off the
    driver's node)."""
    import ray

    me = ray.get_runtime_context().get_node_id()
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        r = dict(n.get("Resources", {}))
        cpu = r.get("CPU", 0.0)
        if n["NodeID"] == me and cpu >= DATA_CPUS:
            cpu -= DATA_CPUS
        out.append({"CPU": cpu, "GPU": r.get("GPU", 0.0)})
    return out


def check_resources(cpus_per_trial: float, gpus_per_trial: float, workers: int, distributed: bool,
                    joined: bool) -> None:
    """Refuse a trial that no node (or, for DDP, no set of nodes) could ever hold.

    A function trial needs its CPUs on one node; a DDP worker needs its share on one node.  On a
    joined cluster (``--address``) an autoscaler may still add nodes, so only warn there.
    """
    nodes = node_capacity()
    need_cpu = worker_cpus(cpus_per_trial, workers) if distributed else cpus_per_trial
    need_gpu = gpus_per_trial / workers if distributed else gpus_per_trial
    best_cpu = max((n["CPU"] for n in nodes), default=0.0)
    best_gpu = max((n["GPU"] for n in nodes), default=0.0)
    total_cpu = sum(n["CPU"] for n in nodes)
    problems = []
    if need_cpu > best_cpu + 1e-9:
        problems.append(f"--cpus-per-trial {cpus_per_trial:g} needs {need_cpu:g} CPUs on one node, "
                        f"the largest node offers {best_cpu:g}")
    elif distributed and cpus_per_trial > total_cpu + 1e-9:
        problems.append(f"--cpus-per-trial {cpus_per_trial:g} > {total_cpu:g} CPUs in the cluster")
    if need_gpu > best_gpu + 1e-9:
        problems.append(f"--gpus-per-trial {gpus_per_trial:g} > {best_gpu:g} GPUs on any node")
    if not problems:
        return
    msg = "; ".join(problems) + ": no trial could ever be scheduled"
    if not joined:
        raise ConfigError(msg)
    log.warning("%s (unless the autoscaler adds nodes)", msg)


def max_concurrent(requested: int | None, trials: int, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """As many trials as the cluster's nodes can hold now (at least 1; an autoscaler adds more)."""
    if requested:
        return requested
    n = 0
    for node in node_capacity():
        k = int(node["CPU"] // cpus_per_trial)
        if gpus_per_trial > 0:
            k = min(k, int(node["GPU"] // gpus_per_trial))
        n += k
    return max(1, min(n, trials))


def start_trials_engine(address: str | None, *, cpus_per_trial: float, gpus_per_trial: float, workers_per_trial: int,
                        distributed: bool, what: str = "trials") -> None:
    """Ray up for a sweep's or an experiment's trials, and the last refusals before anything runs:
    DDP/GPU trials need the State API (Ray Train frees a stopped trial's placement group through
    it), and a trial larger than any node is an error instead of a hang."""
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # errors go to the results file, one line each
    # per-epoch checkpoints of short trials trigger Tune's "snapshotting ... may become a bottleneck"
    # warning every few seconds; the snapshot cost is what checkpoint_overhead already budgets
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    init_ray(address, dashboard=distributed)
    if distributed and not state_api_available():
        raise ConfigError(f"DDP/GPU {what} (--workers-per-trial > 1, --gpus-per-trial > 0) need Ray's State API to free "
                          "a stopped trial's placement group: install ray[default] and start Ray with the dashboard")
    check_resources(cpus_per_trial, gpus_per_trial, workers_per_trial, distributed, joined=address is not None)
