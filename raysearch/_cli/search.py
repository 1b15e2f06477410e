"""Search commands: ``tune`` (the sweep), ``results`` and ``dashboard`` (re-read a run directory)."""
from __future__ import annotations

import contextlib
import sys
from typing import Optional

import typer
from rich.console import Console

from raysearch._cli import emit_json, fail, guarded


def _console() -> Console:
    """Wide tables stay readable when piped (rich falls back to 80 columns off a terminal)."""
    con = Console()
    return con if con.is_terminal else Console(width=160)


def _distinct_errors(df) -> list[str]:
    """One line per distinct trial error, with how many trials hit it (not N Ray tracebacks)."""
    counts = df["error"].dropna().value_counts()
    return [f"{n} x {msg}" for msg, n in counts.items()] or ["(no error message recorded)"]


def register(app: typer.Typer) -> None:
    @app.command()
    def tune(
        dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset name or prepared folder."),
        method: Optional[str] = typer.Option(None, "--method", help="mtl | image_only | sequential | contrastive | all (default: the space's)."),
        space: Optional[str] = typer.Option(None, "--space", help="Search-space YAML (default search_spaces/<dataset>.yaml)."),
        trials: int = typer.Option(8, "--trials", "-n", help="Number of trials (Optuna samples)."),
        max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent", help="Concurrent trials (default: what the resources allow)."),
        scheduler: str = typer.Option("asha", "--scheduler", help="asha | none (no early stopping)."),
        search: str = typer.Option("optuna", "--search", help="optuna (TPE, multivariate) | random."),
        grace_period: Optional[int] = typer.Option(None, "--grace-period", help="ASHA grace period in epochs (default: space file)."),
        reduction_factor: Optional[int] = typer.Option(None, "--reduction-factor", help="ASHA reduction factor (default: space file)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Override train.epochs (= ASHA max_t)."),
        cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial"),
        gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="> 0 runs each trial in a TorchTrainer."),
        workers_per_trial: int = typer.Option(1, "--workers-per-trial", help="> 1 runs DDP in a TorchTrainer."),
        torch_trainer: bool = typer.Option(False, "--torch-trainer", help="Use the TorchTrainer path even for 1 CPU worker."),
        max_failures: int = typer.Option(2, "--max-failures", help="Restarts per trial after a failure (node loss), each from its last checkpoint."),
        checkpoint_every: int = typer.Option(1, "--checkpoint-every", help="Epochs between fault-tolerance checkpoints (0: none)."),
        storage: Optional[str] = typer.Option(None, "--storage", help="Local path or URI (s3://, gs://); default <home>/runs."),
        name: Optional[str] = typer.Option(None, "--name", help="Sweep name (default <dataset>-<timestamp>)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the interrupted sweep --name in --storage."),
        address: Optional[str] = typer.Option(None, "--address", help="auto | ray://host:10001 (default: a local Ray)."),
        wandb_project: str = typer.Option("raysearch", "--wandb-project"),
        no_wandb: bool = typer.Option(False, "--no-wandb", help="Disable W&B logging."),
        seed: int = typer.Option(0, "--seed"),
        data_root: Optional[str] = typer.Option(None, "--data-root", help="Overrides RAYSEARCH_HOME."),
        top: int = typer.Option(10, "--top", help="Rows in the final table."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Hyperparameter search: Ray Tune + Optuna (TPE) + ASHA, one `fit` per trial."""
        from raysearch.report import results_records, results_table
        from raysearch.search.tune import SweepConfig, build_space, run_sweep

        if resume and not name:
            fail("--resume needs the --name of the sweep to continue")
        cfg = guarded(lambda: SweepConfig(
            dataset=dataset, data_root=data_root, space=space, method=method, trials=trials,
            max_concurrent=max_concurrent, scheduler=scheduler, search=search, grace_period=grace_period,
            reduction_factor=reduction_factor, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
            workers_per_trial=workers_per_trial, storage=storage, name=name, resume=resume, address=address,
            wandb=not no_wandb, wandb_project=wandb_project, seed=seed, epochs=epochs, torch_trainer=torch_trainer,
            max_failures=max_failures, checkpoint_every=checkpoint_every,
        ))
        # --resume rebuilds the space from the sweep's own sweep.json (the flags given now don't count)
        sp = None if resume else guarded(lambda: build_space(cfg))
        if json_out:  # stdout is the JSON alone: whatever Ray or Tune print goes to stderr
            with contextlib.redirect_stdout(sys.stderr):
                res = guarded(lambda: run_sweep(cfg, sp, progress=False))
        else:
            res = guarded(lambda: run_sweep(cfg, sp))
        df = res.results
        all_failed = len(df) > 0 and (df["stop_reason"] == "error").all()
        if json_out:
            emit_json({"run_dir": str(res.run_dir), "best_yaml": str(res.best_yaml) if res.best_yaml else None,
                       "wall_time_s": res.wall_time_s, "shared": res.shared_stats,
                       "interrupted": res.interrupted, "trials": results_records(res.results, top)})
            if all_failed:
                for line in _distinct_errors(df):
                    typer.echo(f"error: {line}", err=True)
                raise typer.Exit(1)
            return
        con = _console()
        con.print(results_table(res.results, top=top, title=res.run_dir.name))
        con.print(f"run directory: {res.run_dir}  (results.parquet, best.yaml)   wall time {res.wall_time_s:.0f} s")
        if res.best_yaml:
            con.print(f"best config: {res.best_yaml}  ->  raysearch train --config {res.best_yaml}")
        if res.interrupted:
            con.print(f"[yellow]interrupted after {len(df)} of {trials} trials; continue with "
                      f"`raysearch tune --dataset {dataset} --name {res.run_dir.name} --resume`"
                      f"{' --storage ' + storage if storage else ''}[/yellow]")
        if (df["retries"] > 0).any() if "retries" in df else False:
            con.print(f"{int((df['retries'] > 0).sum())} trial(s) restarted after a failure "
                      f"({int(df['retries'].sum())} restarts; see the retries column)")
        if all_failed:
            fail(f"all {len(df)} trials failed: " + "; ".join(_distinct_errors(df)))

    @app.command()
    def results(
        run_dir: str = typer.Argument(..., help="A `raysearch tune` run directory."),
        top: int = typer.Option(10, "--top"),
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Print a finished sweep's best trials again (from results.parquet)."""
        from pathlib import Path

        from raysearch.report import BEST_FILE, load_results, results_records, results_table

        df = guarded(lambda: load_results(run_dir))
        if json_out:
            emit_json(results_records(df, top))
            return
        con = _console()
        con.print(results_table(df, top=top, title=Path(run_dir).name))
        best = Path(run_dir) / BEST_FILE
        if best.is_file():
            con.print(f"best config: {best}")

    @app.command()
    def dashboard(
        run_dir: str = typer.Argument(..., help="A `raysearch tune` run directory."),
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Weighting-scheme comparison: dashboard.png + dashboard.md (and W&B panels when online)."""
        from raysearch.report import dashboard as build

        out = guarded(lambda: build(run_dir))
        if json_out:
            emit_json(out)
            return
        con = _console()
        con.print((__import__("pathlib").Path(out["table"])).read_text())
        con.print(f"chart: {out['png']}")
        if "wandb" in out:
            con.print(f"W&B: {out['wandb']}")
