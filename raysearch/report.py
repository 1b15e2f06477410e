"""Sweep results: ``results.parquet`` + ``best.yaml``, the rich table, and the weighting dashboard.

``results.parquet`` holds one row per trial (searched parameters as ``section.field`` columns, the
full RunConfig as JSON, best val mAP, test mAP of the best checkpoint, epochs run, stop reason,
wall time).  The best trial is chosen on *validation* mAP, never test, and written as a
``RunConfig`` YAML that ``raysearch train --config`` accepts.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from raysearch._io import write_text
# one definition of stop reasons and columns, shared with the sweep that writes them (raysearch.runs: the
# layer below model and search, so a run directory on a URI reads the same)
from raysearch.runs import COMPLETE, EXPERIMENT_FILE, best_row, load_results, locate, param_columns
from raysearch.search.results import node_labels

DASHBOARD_PNG = "dashboard.png"
DASHBOARD_TABLE = "dashboard.md"


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e3 else f"{v:.{digits}f}"
    return str(v)


def results_table(df: pd.DataFrame, top: int = 10, title: str = "best trials"):
    """A rich Table of the ``top`` trials by val mAP (searched parameters included, compactly named).

    ``node`` (host name, or host/IP, or host#node-id where one host runs several Ray nodes: see
    ``node_labels``) when any trial recorded one; ``retries`` when any trial was restarted.  The
    ``best.yaml`` trial (``best_row``) is starred: an ASHA-stopped trial can top the val column
    after fewer epochs, and it is not the one ``best.yaml`` names."""
    from rich.table import Table

    params = [c for c in param_columns(df) if c not in ("train.method", "train.weighting")]
    short = {c: c.split(".", 1)[1].replace("weight_decay", "wd") for c in params}
    if len(set(short.values())) < len(short):  # e.g. train.lr and cf.lr both searched
        short = {c: c.replace("train.", "").replace("weight_decay", "wd") for c in params}
    df = df.reset_index(drop=True)  # labels below are looked up by row
    multi_method = df["method"].nunique() > 1
    retries = df["retries"].fillna(0).astype(int) if "retries" in df else pd.Series(0, index=df.index)
    show_retries = bool((retries > 0).any())
    nodes = node_labels(df)
    show_node = bool((nodes != "-").any())
    best = best_row(df)
    best_id = None if best is None else best["trial_id"]
    ranked = df.sort_values("best_val_map", ascending=False, na_position="last").head(top)
    shown = best_id is not None and best_id in set(ranked["trial_id"])
    caption = None
    if shown:  # best_row falls back to an ASHA-stopped trial only when no trial ran its schedule
        caption = ("* best.yaml: the best val mAP among trials that ran their schedule" if best["stop_reason"] in COMPLETE
                   else "* best.yaml: no trial ran its schedule yet; the best val mAP among ASHA-stopped trials "
                        "(fewer epochs, no test mAP)")
    t = Table(title=f"{title} ({len(df)} trials; sorted by val mAP)", caption=caption)
    cols = ["#", "trial", *(["method"] if multi_method else []), "weighting", *short.values(),
            "val mAP", "test mAP", "epochs", "stop", "wall s", *(["retries"] if show_retries else []),
            *(["node"] if show_node else [])]
    for col in cols:
        t.add_column(col, justify="left" if col in ("trial", "method", "weighting", "stop", "node") else "right",
                     no_wrap=True)
    for i, (idx, r) in enumerate(ranked.iterrows(), 1):
        t.add_row(f"{i}*" if r["trial_id"] == best_id else str(i), str(r["trial_id"]), *([str(r["method"])] if multi_method else []), str(r["weighting"]),
                  *[_fmt(r[c], 3) for c in params],
                  _fmt(r["best_val_map"]), _fmt(r["test_map"]), _fmt(r["epochs_run"]),
                  str(r["stop_reason"]), f"{float(r['wall_time_s']):.1f}",
                  *([str(retries[idx])] if show_retries else []), *([nodes[idx]] if show_node else []))
    return t


def results_records(df: pd.DataFrame, top: int | None = None) -> list[dict[str, Any]]:
    ranked = df.sort_values("best_val_map", ascending=False, na_position="last")
    if top:
        ranked = ranked.head(top)
    return json.loads(ranked.drop(columns=["config"], errors="ignore").to_json(orient="records"))




def weighting_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (method, weighting), over *comparable* trials only (ran their whole schedule; ASHA-stopped
    trials saw fewer epochs and have no test evaluation, so they are counted but not compared):
    best/mean val mAP and the test mAP of the group's best-val trial (best-of-sweep: one split,
    one seed, no interval)."""
    rows = []
    for (method, weighting), g in df.groupby(["method", "weighting"], sort=True):
        c = g[g["stop_reason"].isin(COMPLETE)]
        b = best_row(c[c["test_map"].notna()])
        rows.append({
            "method": method, "weighting": weighting, "trials": len(g), "comparable": len(c),
            "asha_stopped": int((g["stop_reason"] == "asha_stopped").sum()),
            "best_of_sweep_val_map": c["best_val_map"].max(), "mean_val_map": c["best_val_map"].mean(),
            "best_of_sweep_test_map": None if b is None else b["test_map"],
            "epochs_total": int(g["epochs_run"].sum()),  # all the group's trials, ASHA-stopped included
        })
    return pd.DataFrame(rows)


def dashboard(run_dir: str | Path, online: bool | None = None) -> dict[str, Any]:
    """PNG + markdown table of a sweep: comparable trials by weighting scheme, best-of-sweep labelled
    as such, ASHA-stopped trials marked (and never used as best); W&B panels too when online.

    ``run_dir`` may be a URI (:mod:`raysearch.runs`); the outputs are then written to a local folder
    (``<home>/cache/dashboards/<name>``).  An experiment directory has its own dashboard
    (:func:`raysearch.experiment.report.dashboard`; ``raysearch dashboard`` picks it): this layer is
    below ``experiment`` and never imports it."""
    loc = locate(run_dir)
    if loc.join(EXPERIMENT_FILE).is_file():
        from raysearch.errors import InputError

        raise InputError(f"{run_dir} is a `raysearch experiment` directory: its dashboard is "
                         f"raysearch.experiment.report.dashboard (`raysearch dashboard {run_dir}` picks it)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = load_results(loc)
    if loc.is_local:
        run_dir = Path(loc.path)
        out_dir = run_dir
    else:
        from raysearch import paths

        run_dir = Path(loc.name)
        out_dir = paths.cache_dir("dashboards") / loc.name
        out_dir.mkdir(parents=True, exist_ok=True)
    summary = weighting_summary(df)
    labels = [f"{m}\n{w}" if df["method"].nunique() > 1 else str(w)
              for m, w in zip(summary["method"], summary["weighting"])]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(labels) * 2), 4.4), constrained_layout=True)
    panels = ((axes[0], "best_val_map", "val mAP"), (axes[1], "test_map", "test mAP (finished trials only)"))
    labelled: set[str] = set()

    def once(label: str) -> str | None:  # each legend entry once, from whichever group first has it
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for ax, col, name in panels:
        for x, (m, w) in enumerate(zip(summary["method"], summary["weighting"])):
            g = df[(df["method"] == m) & (df["weighting"] == w)]
            comp = g[g["stop_reason"].isin(COMPLETE)][col].dropna()
            if len(comp):
                ax.scatter([x] * len(comp), comp, alpha=0.6, color="C0", label=once("comparable trial"))
            if col == "best_val_map":
                cut = g[g["stop_reason"] == "asha_stopped"][col].dropna()
                if len(cut):
                    ax.scatter([x + 0.15] * len(cut), cut, marker="x", color="0.6",
                               label=once("ASHA-stopped (fewer epochs; not compared)"))
            if len(comp):
                ax.hlines(comp.max(), x - 0.3, x + 0.3, color="C3", label=once("best-of-sweep"))
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(name)
        ax.set_xlabel("weighting scheme")
        ax.grid(axis="y", alpha=0.3)
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    if handles:  # below the panels: inside one it can hide a trial's point
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7)
    fig.suptitle(f"{run_dir.name}: best-of-sweep by weighting scheme (one split, one seed, no CI; "
                 f"`raysearch experiment --from-sweep` gives CIs)", fontsize=9)
    png = out_dir / DASHBOARD_PNG
    fig.savefig(png, dpi=110)
    plt.close(fig)
    md = out_dir / DASHBOARD_TABLE
    write_text(md, "Best-of-sweep (one split, one seed, no confidence interval; ASHA-stopped trials are counted, "
                  "not compared):\n\n" + _markdown(summary))
    out: dict[str, Any] = {"kind": "sweep", "png": str(png), "table": str(md),
                           "summary": json.loads(summary.to_json(orient="records"))}
    if online is None:
        from raysearch.search.tracking import wandb_mode

        online = wandb_mode() == "online"
    if online:
        out["wandb"] = _wandb_dashboard(out_dir, df, summary, png, project=_project(loc))
    return out


def _markdown(summary: pd.DataFrame) -> str:
    cols = list(summary.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _wandb_dashboard(run_dir: Path, df: pd.DataFrame, summary: pd.DataFrame, png: Path,
                     project: str | None = None) -> str:
    """Log a comparison run (table + bar chart + PNG) in the sweep's group: W&B builds the panels.

    Guarded: any W&B failure is reported, never fatal, since the local dashboard already exists.
    """
    try:
        import wandb

        run = wandb.init(project=project or _project(run_dir), group=run_dir.name, job_type="dashboard",
                         name=f"{run_dir.name}-weighting-comparison", dir=str(run_dir))
        table = wandb.Table(dataframe=summary.astype({"best_of_sweep_test_map": float}))
        run.log({
            "weighting_comparison": table,
            "best_val_map_by_weighting": wandb.plot.bar(table, "weighting", "best_of_sweep_val_map",
                                                        title="best-of-sweep val mAP by weighting scheme"),
            "trials": wandb.Table(dataframe=df.drop(columns=["config"], errors="ignore")),
            "dashboard": wandb.Image(str(png)),
        })
        url = run.url
        run.finish()
        return url or "logged"
    except Exception as e:  # network / auth problems must not lose the local dashboard
        return f"W&B dashboard not created: {e}"


def _project(run_dir: Any) -> str:
    meta = locate(run_dir).join("sweep.json")
    if meta.is_file():
        try:
            return json.loads(meta.read_text()).get("wandb_project") or "raysearch"
        except json.JSONDecodeError:
            pass
    return "raysearch"
