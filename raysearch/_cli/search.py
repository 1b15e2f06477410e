"""Search commands: ``tune`` (the sweep), ``results`` and ``dashboard`` (re-read a run directory)."""
from __future__ import annotations

import contextlib
import inspect
import sys

import typer
from rich.console import Console

from raysearch._cli import emit_json, fail, given_flags, guarded
from raysearch._cli.options import (
    DashboardDir, JsonOut, RunDir, Top, add, config_parameters, config_values,
)
from raysearch.config import SweepConfig


def _console() -> Console:
    """Wide tables stay readable when piped (rich falls back to 80 columns off a terminal)."""
    con = Console()
    return con if con.is_terminal else Console(width=160)


def _distinct_errors(df) -> list[str]:
    """One line per distinct trial error, with how many trials hit it (not N Ray tracebacks)."""
    counts = df["error"].dropna().value_counts()
    return [f"{n} x {msg}" for msg, n in counts.items()] or ["(no error message recorded)"]


def tune(*, top: int = 10, json_out: bool = False, **options) -> None:
    """Hyperparameter search: Ray Tune + Optuna (TPE) + ASHA, one `fit` per trial."""
    from raysearch.search.tune import build_space, run_sweep

    if options["resume"] and not options["name"]:
        fail("--resume needs the --name of the sweep to continue")
    cfg = guarded(lambda: SweepConfig(**config_values(SweepConfig, options)))
    # --resume rebuilds the space from the sweep's own sweep.json (a flag contradicting it is refused)
    sp = None if cfg.resume else guarded(lambda: build_space(cfg))
    given = given_flags({"no_wandb": "wandb"})
    if json_out:  # stdout is the JSON alone: whatever Ray or Tune print goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            res = guarded(lambda: run_sweep(cfg, sp, progress=False, given=given))
        return _emit_sweep(res, cfg, top)
    _print_sweep(guarded(lambda: run_sweep(cfg, sp, given=given)), cfg, top)


# the options of `tune` are SweepConfig's fields (type, flags, default, help: on the field), then these
tune.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    *config_parameters(SweepConfig),
    inspect.Parameter("top", inspect.Parameter.KEYWORD_ONLY, default=10, annotation=Top),
    inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOut),
])


def _all_failed(df) -> bool:
    return len(df) > 0 and bool((df["stop_reason"] == "error").all())


def resume_hint(cfg, name: str) -> str:
    """The command that continues sweep ``name``: it repeats where the sweep runs and is kept
    (``--address``, ``--storage``, ``--data-root``), else a copy run on a cluster's head would start a
    local Ray there and look for the sweep in the default runs folder.  Shell-quoted, one line."""
    import shlex

    args = ["raysearch", "tune", "--dataset", cfg.dataset, "--name", name, "--resume"]
    for flag, value in (("--address", cfg.address), ("--storage", cfg.storage), ("--data-root", cfg.data_root)):
        if value:
            args += [flag, str(value)]
    return " ".join(shlex.quote(a) for a in args)


def _emit_sweep(res, cfg, top: int) -> None:
    from raysearch.report import results_records

    emit_json({"run_dir": str(res.run_dir), "best_yaml": str(res.best_yaml) if res.best_yaml else None,
               "wall_time_s": res.wall_time_s, "shared": res.shared_stats,
               "interrupted": res.interrupted, "asha": res.asha,
               "resume_command": resume_hint(cfg, res.run_dir.name) if res.interrupted else None,
               "trials": results_records(res.results, top)})
    if _all_failed(res.results):
        for line in _distinct_errors(res.results):
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1)


def _print_sweep(res, cfg, top: int) -> None:
    from raysearch.report import results_table

    from rich.markup import escape

    df, con = res.results, _console()
    con.print(results_table(df, top=top, title=res.run_dir.name))
    files = "results.parquet, best.yaml" if res.best_yaml else "results.parquet; no best.yaml: no trial finished"
    con.print(f"run directory: {escape(str(res.run_dir))}  ({files})   wall time {res.wall_time_s:.0f} s",
              soft_wrap=True)
    from raysearch.runs import StopReason

    stopped = int((df["stop_reason"] == StopReason.ASHA_STOPPED.value).sum()) if len(df) else 0
    if res.asha and stopped:  # why a trial with a higher val mAP can be stopped: the rungs' own metric
        a = res.asha
        con.print(f"ASHA (grace {a['grace_period']}, reduction factor {a['reduction_factor']}, rungs judged on "
                  f"{a['metric']}) stopped {stopped} of {len(df)} trials", soft_wrap=True, markup=False)
    if res.best_yaml:
        # soft_wrap: the command stays on one line, so it can be copied
        con.print(f"best config: {res.best_yaml}  ->  raysearch train --config {res.best_yaml}", soft_wrap=True,
                  markup=False)
    if res.interrupted:
        con.print(f"[yellow]interrupted after {len(df)} of {cfg.trials} trials; continue with "
                  f"`{escape(resume_hint(cfg, res.run_dir.name))}`[/yellow]", soft_wrap=True)
    if (df["retries"] > 0).any() if "retries" in df else False:
        con.print(f"{int((df['retries'] > 0).sum())} trial(s) restarted after a failure "
                  f"({int(df['retries'].sum())} restarts; see the retries column)")
    if _all_failed(df):
        fail(f"all {len(df)} trials failed: " + "; ".join(_distinct_errors(df)))


def results(run_dir: RunDir, top: Top = 10, json_out: JsonOut = False) -> None:
    """Print a finished sweep's best trials again (from results.parquet)."""
    from pathlib import Path

    from raysearch.report import results_records, results_table
    from raysearch.search.results import BEST_FILE, load_results

    df = guarded(lambda: load_results(run_dir))
    if json_out:
        return emit_json(results_records(df, top))
    con = _console()
    con.print(results_table(df, top=top, title=Path(run_dir).name))
    best = Path(run_dir) / BEST_FILE
    if best.is_file():
        con.print(f"best config: {best}")


def dashboard(run_dir: DashboardDir, json_out: JsonOut = False) -> None:
    """Weighting-scheme comparison: dashboard.png + dashboard.md (and W&B panels when online)."""
    from pathlib import Path

    from raysearch.runs import run_kind

    if guarded(lambda: run_kind(run_dir)) == "experiment":  # its own dashboard: CIs and p-values per variant
        from raysearch.experiment.report import dashboard as build
    else:
        from raysearch.report import dashboard as build

    out = guarded(lambda: build(run_dir))
    if json_out:
        return emit_json(out)
    con = _console()
    con.print(Path(out["table"]).read_text())
    con.print(f"chart: {out['png']}")
    if "wandb" in out:
        con.print(f"W&B: {out['wandb']}")


def register(app: typer.Typer) -> None:
    add(app, tune, results, dashboard)
