"""One definition of a sweep's per-trial outcome: stop reasons, the results columns, the
frame built from Tune's ``ResultGrid``, and the files it is kept in (``results.parquet``,
``best.yaml``) with their reader.

Why one module: the stop reasons are produced by the trainables (a trial's final report), by the
driver (a trial Tune stopped, errored or never finished) and read by ``report.py`` and
``raysearch dashboard``; when each kept its own list they drifted and an interrupted FIFO sweep
produced a label the writer rejected, losing every result.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from raysearch._io import atomic_path
from raysearch._ray_compat import result_grid_trials
from raysearch.config import ConfigError, dump_run_config, to_dict
# the results schema, the best trial and the results reader live one layer down (raysearch.runs: model.io and
# the inference commands read them too); re-exported here, where the sweep writes them
from raysearch.runs import (BEST_FILE, COMPLETE, CORE_COLUMNS, EXTRA_COLUMNS, FINISHED, RESULTS_FILE,  # noqa: F401
                            STOP_REASONS, StopReason, best_row, best_run_config, check_stop_reasons,
                            checkpoint_uri, load_results, param_columns)

TIME_ATTR = "epoch"


def node_location() -> dict[str, str]:
    """Where the calling Ray worker runs, as a trial reports it (metrics ``node_host``/``node_address``).

    Not Tune's own ``hostname``/``node_ip`` metrics: Tune overwrites those with the trial actor's
    node, which for a DDP trial is not where its workers train.
    """
    import socket

    import ray

    try:
        ip = ray.util.get_node_ip_address()
    except Exception:  # not in a Ray worker (a unit test): the host name still says where
        ip = ""
    return {"node_host": socket.gethostname(), "node_address": ip}


def trial_failure(trial: Any) -> str:
    """One line on a failed trial for the restart warning: the error's last line and the full
    path of its trace (never cut: it is what an operator opens)."""
    err = None
    try:
        err = trial.get_pickled_error() or trial.get_error()
    except Exception:  # the error file may not be readable from the driver (remote storage)
        pass
    where = getattr(trial, "error_file", None)
    if err is None and not where:
        return "node lost"
    msg = last_line(err) if err is not None else "error"
    return f"{msg}; trace: {where}" if where else msg


def last_line(err: BaseException | str) -> str:
    """The informative line of a (Ray-wrapped) exception, capped for tables."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]


def classify(metrics: Mapping[str, Any], errored: bool, scheduler: str, epochs_planned: int) -> str:
    """The stop reason of one trial from its last reported metrics.

    A trial without a final report either errored, was cut by ASHA at a rung (fewer epochs than
    planned), or was left unfinished by the sweep itself (Ctrl+C, time budget).
    """
    if errored:
        return StopReason.ERROR.value
    if metrics.get("final"):
        return str(metrics.get("stop_reason", StopReason.COMPLETED.value))
    if not metrics:
        return StopReason.INTERRUPTED.value  # never reported: it had not started its first epoch
    if scheduler == "asha" and metrics.get("asha_stopped"):
        return StopReason.ASHA_STOPPED.value
    return StopReason.INTERRUPTED.value


def results_frame(grid: Any, space: Any, scheduler: str = "asha", retries: Mapping[str, int] | None = None,
                  asha_stopped: set[str] | frozenset[str] = frozenset()) -> pd.DataFrame:
    """One row per trial from Tune's ResultGrid (parameters, mAPs, epochs, stop reason, retries)."""
    retries = retries or {}
    rows = []
    epochs_planned = space.base.train.epochs
    results = list(grid)
    for r, trial in zip(results, result_grid_trials(grid, len(results))):
        m = dict(r.metrics or {})
        # a trial that never reported has no metrics, hence no config in its Result: its Trial knows it
        config = r.config or (getattr(trial, "config", None) if trial is not None else None) or {}
        params = {k: v for k, v in config.items() if k in space.names}
        try:
            run = space.apply(params, space.base)
        except ConfigError:
            run = space.base
        found = re.search(r"_([0-9a-f]{5,})_\d+_", Path(r.path).name) if r.path else None
        trial_id = str(m.get("trial_id") or getattr(trial, "trial_id", None)
                       or (found.group(1) if found else r.path))
        if trial_id in asha_stopped and not m.get("final"):
            m["asha_stopped"] = True
        final = bool(m.get("final"))
        reason = classify(m, r.error is not None, scheduler, epochs_planned)
        best_val = m.get("best_val_map")
        epochs_run = int(m["epochs_run"]) if final else int(m.get(TIME_ATTR, 0) or 0)
        rows.append({
            "trial_id": trial_id,
            "method": run.train.method, "weighting": run.train.weighting,
            **{k: (json.dumps(list(v)) if isinstance(v, (list, tuple)) else v)
               for k, v in ((n, space.param(n).decode(params[n])) for n in space.names if n in params)},
            "best_val_map": float(best_val) if best_val is not None and epochs_run > 0 else float("nan"),
            "test_map": float(m["test_map"]) if final and m.get("test_map") is not None else float("nan"),
            "epochs_run": epochs_run, "stop_reason": reason,
            "wall_time_s": float(m.get("time_total_s", float("nan"))),
            "train_time_s": float(m.get("train_time_s", float("nan"))),
            "data_s": float(m.get("data_s", float("nan"))),
            "eval_time_s": float(m.get("eval_time_s", float("nan"))),
            "retries": int(retries.get(trial_id, 0)),
            "resumed_from_epoch": int(m.get("resumed_from_epoch", 0) or 0),
            "node": m.get("node_id"),
            # older trials (or a resumed one's first run) lack node_host: Tune's auto metrics
            "host": m.get("node_host") or m.get("hostname"),
            "node_ip": m.get("node_address") or m.get("node_ip"),
            # a URI for a checkpoint on cloud storage (Ray's .path is inside its filesystem: no scheme)
            "checkpoint": checkpoint_uri(r.checkpoint) if r.checkpoint else m.get("checkpoint_path"),
            "error": None if r.error is None else last_line(r.error),
            "config": json.dumps(to_dict(run)),
        })
    df = pd.DataFrame(rows, columns=None if rows else CORE_COLUMNS + EXTRA_COLUMNS)
    for n in space.names:  # conditional parameters are absent in some trials
        if n not in df:
            df[n] = None
    # parameters in the space's order, after the weighting: not in whichever order the first trials
    # happened to have them (a resumed sweep's table would move omega next to alpha)
    rest = [c for c in df.columns if c not in space.names]
    at = rest.index("weighting") + 1 if "weighting" in rest else len(rest)
    df = df[rest[:at] + list(space.names) + rest[at:]]
    check_stop_reasons(df["stop_reason"])
    return df


def node_labels(df: pd.DataFrame) -> pd.Series:
    """A short readable node per row for printed tables: the host name; with its IP where one
    host name has several IPs; with a node-id prefix where one host/IP runs several Ray nodes
    (``ray start`` nodes on one machine, containers sharing a host name).  ``-`` when unknown;
    results written before ``host``/``node_ip`` existed show the node id's first 8 digits."""
    def col(name: str) -> pd.Series:
        if name not in df:
            return pd.Series([None] * len(df), index=df.index, dtype=object)
        return df[name].astype(object).where(df[name].notna(), None)

    host, ip, node = col("host"), col("node_ip"), col("node")
    label = host.where(host.notna(), ip)
    label = label.where(label.notna(), node.map(lambda n: None if n is None else str(n)[:8]))
    known = label.notna()
    ips = pd.DataFrame({"label": label, "ip": ip})[known & ip.notna()].groupby("label")["ip"].nunique()
    many_ips = label.isin(ips[ips > 1].index) & ip.notna() & host.notna()
    label = label.where(~many_ips, host.astype(str) + "/" + ip.astype(str))
    ids = pd.DataFrame({"label": label, "node": node})[known & node.notna()].groupby("label")["node"].nunique()
    shared = label.isin(ids[ids > 1].index) & node.notna() & host.notna()
    label = label.where(~shared, label.astype(str) + "#" + node.map(lambda n: str(n)[:6]))
    return label.where(label.notna(), "-").astype(str)


# ------------------------------------------------------------------ the results files

def write_results(df: pd.DataFrame, run_dir: str | Path) -> tuple[Path, Path | None]:
    """Write ``results.parquet`` and (when any trial produced a val mAP) ``best.yaml``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_stop_reasons(df["stop_reason"])
    out = run_dir / RESULTS_FILE
    with atomic_path(out) as tmp:  # a resumed or concurrent reader never sees half a file
        df.to_parquet(tmp, index=False)
    best = best_row(df)
    best_path = None
    if best is not None:
        best_path = run_dir / BEST_FILE
        dump_run_config(best_run_config(best), best_path)
    return out, best_path
