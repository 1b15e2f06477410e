"""Search commands: ``tune`` (the sweep), ``results`` and ``dashboard`` (re-read a run directory)."""
from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

from raysearch._cli import emit_json, fail, guarded
from raysearch._cli.options import (
    Address, CpusPerTrial, DataRoot, Dataset, Epochs, JsonOut, MaxConcurrent, Method, NoWandb, RunDir, Top,
    WandbProject, add, CheckpointEvery, CheckpointOverhead, GpusPerTrial, MaxFailures, StatusEvery, WorkersPerTrial,
)

_I = Optional[int]
Space = Annotated[Optional[str], typer.Option(
    "--space", help="Search-space YAML (default search_spaces/<dataset>.yaml).")]
Trials = Annotated[int, typer.Option("--trials", "-n", help="Number of trials (Optuna samples).")]
Scheduler = Annotated[str, typer.Option("--scheduler", help="asha | none (no early stopping).")]
Search = Annotated[str, typer.Option("--search", help="optuna (TPE, multivariate) | random.")]
GracePeriod = Annotated[_I, typer.Option("--grace-period", help="ASHA grace period in epochs (default: space file).")]
ReductionFactor = Annotated[_I, typer.Option(
    "--reduction-factor", help="ASHA reduction factor (default: space file).")]
TorchTrainer = Annotated[bool, typer.Option(
    "--torch-trainer", help="Use the TorchTrainer path even for 1 CPU worker.")]
Storage = Annotated[Optional[str], typer.Option(
    "--storage", help="Local path or URI (s3://, gs://); default <home>/runs.")]
Name = Annotated[Optional[str], typer.Option("--name", help="Sweep name (default <dataset>-<timestamp>).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the interrupted sweep --name in --storage.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the search (sampler and trial seeds).")]


def _console() -> Console:
    """Wide tables stay readable when piped (rich falls back to 80 columns off a terminal)."""
    con = Console()
    return con if con.is_terminal else Console(width=160)


def _distinct_errors(df) -> list[str]:
    """One line per distinct trial error, with how many trials hit it (not N Ray tracebacks)."""
    counts = df["error"].dropna().value_counts()
    return [f"{n} x {msg}" for msg, n in counts.items()] or ["(no error message recorded)"]


def tune(
    dataset: Dataset = "synthetic", method: Method = None, space: Space = None, trials: Trials = 8,
    max_concurrent: MaxConcurrent = None, scheduler: Scheduler = "asha", search: Search = "optuna",
    grace_period: GracePeriod = None, reduction_factor: ReductionFactor = None, epochs: Epochs = None,
    cpus_per_trial: CpusPerTrial = 1.0, gpus_per_trial: GpusPerTrial = 0.0, workers_per_trial: WorkersPerTrial = 1,
    torch_trainer: TorchTrainer = False, max_failures: MaxFailures = 2, checkpoint_every: CheckpointEvery = 1,
    checkpoint_overhead: CheckpointOverhead = 0.1, status_every: StatusEvery = 60.0, storage: Storage = None, name: Name = None, resume: Resume = False, address: Address = None,
    wandb_project: WandbProject = "raysearch", no_wandb: NoWandb = False, seed: Seed = 0,
    data_root: DataRoot = None, top: Top = 10, json_out: JsonOut = False,
) -> None:
    """Hyperparameter search: Ray Tune + Optuna (TPE) + ASHA, one `fit` per trial."""
    from raysearch.search.tune import SweepConfig, build_space, run_sweep

    if resume and not name:
        fail("--resume needs the --name of the sweep to continue")
    if not status_every >= 0:
        fail(f"--status-every must be >= 0 seconds, got {status_every}")
    cfg = guarded(lambda: SweepConfig(
        dataset=dataset, data_root=data_root, space=space, method=method, trials=trials,
        max_concurrent=max_concurrent, scheduler=scheduler, search=search, grace_period=grace_period,
        reduction_factor=reduction_factor, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
        workers_per_trial=workers_per_trial, storage=storage, name=name, resume=resume, address=address,
        wandb=not no_wandb, wandb_project=wandb_project, seed=seed, epochs=epochs, torch_trainer=torch_trainer,
        max_failures=max_failures, checkpoint_every=checkpoint_every, checkpoint_overhead=checkpoint_overhead,
        status_every=status_every,
    ))
    # --resume rebuilds the space from the sweep's own sweep.json (a flag contradicting it is refused)
    sp = None if resume else guarded(lambda: build_space(cfg))
    if json_out:  # stdout is the JSON alone: whatever Ray or Tune print goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            res = guarded(lambda: run_sweep(cfg, sp, progress=False))
        return _emit_sweep(res, cfg, top)
    _print_sweep(guarded(lambda: run_sweep(cfg, sp)), cfg, top)


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
               "interrupted": res.interrupted,
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


def dashboard(run_dir: RunDir, json_out: JsonOut = False) -> None:
    """Weighting-scheme comparison: dashboard.png + dashboard.md (and W&B panels when online)."""
    from pathlib import Path

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
