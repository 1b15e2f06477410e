"""``raysearch experiment``: the paired cross-validated comparison (see raysearch.experiment)."""
from __future__ import annotations

from typing import List, Optional

import typer

from raysearch._cli import emit_json, fail, guarded


def _floats(s: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError:
        fail(f"{flag} expects comma-separated numbers, got {s!r}")
        raise


def register(app: typer.Typer) -> None:
    @app.command()
    def experiment(
        dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset name or prepared folder."),
        from_sweep: Optional[List[str]] = typer.Option(None, "--from-sweep", help="Sweep run dir(s): each variant runs at its own group's best finished trial (by val mAP)."),
        config: Optional[List[str]] = typer.Option(None, "--config", help="RunConfig YAML for every variant, or VARIANT=FILE (repeatable)."),
        variants: str = typer.Option("image_only,mtl:uniform,mtl:interaction,mtl:loss", "--variants",
                                     help="Comma-separated method[:weighting]; image_only is always the reference."),
        seeds: int = typer.Option(3, "--seeds", help="Training seeds per fold."),
        folds: int = typer.Option(5, "--folds", help="K of the K-fold cross-validation over items."),
        label_ratios: str = typer.Option("1.0", "--label-ratios", help="Comma-separated fractions of train items keeping labels."),
        shuffle_control: bool = typer.Option(False, "--shuffle-control", help="Add the first mtl variant with CF vectors shuffled across items."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Override every variant's train.epochs."),
        out: Optional[str] = typer.Option(None, "--out", help="Output directory (default <home>/runs/experiment-<dataset>-<time>)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the interrupted experiment in --out."),
        report_only: bool = typer.Option(False, "--report-only", help="With --resume: write the outputs from the units finished so far; run none."),
        address: Optional[str] = typer.Option(None, "--address", help="ray://host:10001 or host:port (default: a local Ray)."),
        cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial"),
        max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent"),
        split_seed: int = typer.Option(0, "--split-seed", help="Seed of the fold assignment and val carving."),
        n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the items."),
        no_cf_tables: bool = typer.Option(False, "--no-cf-tables", help="Skip the CF AUC / CF2Label tables."),
        wandb_project: str = typer.Option("raysearch", "--wandb-project"),
        no_wandb: bool = typer.Option(False, "--no-wandb"),
        data_root: Optional[str] = typer.Option(None, "--data-root", help="Overrides RAYSEARCH_HOME."),
        json_out: bool = typer.Option(False, "--json", help="Print only the summary as JSON on stdout."),
    ) -> None:
        """Does the CF task help, which weighting scheme, at which label ratio: K folds x seeds, paired tests, CIs."""
        import contextlib
        import json
        import logging
        import sys

        from raysearch.experiment import ExperimentConfig, run_experiment

        cfg = guarded(lambda: ExperimentConfig(
            dataset=dataset, data_root=data_root, variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
            seeds=seeds, folds=folds, label_ratios=_floats(label_ratios, "--label-ratios"),
            shuffle_control=shuffle_control, from_sweep=tuple(from_sweep or ()), configs=tuple(config or ()),
            epochs=epochs, out=out, resume=resume or report_only, report_only=report_only, address=address, cpus_per_trial=cpus_per_trial,
            max_concurrent=max_concurrent, split_seed=split_seed, n_boot=n_boot, wandb=not no_wandb,
            wandb_project=wandb_project, cf_tables=not no_cf_tables))
        if (resume or report_only) and not out:
            fail("--resume / --report-only need the --out directory of the experiment")
        if json_out:  # stdout carries the JSON only: Tune's progress tables go to stderr
            logging.getLogger("raysearch").setLevel(logging.WARNING)
            with contextlib.redirect_stdout(sys.stderr):
                res = guarded(lambda: run_experiment(cfg))
        else:
            res = guarded(lambda: run_experiment(cfg))
        summary = json.loads(res.summary.to_json(orient="records"))
        if json_out:
            emit_json({"out_dir": str(res.out_dir), "summary": summary, "failed_units": res.missing})
            return
        from rich.console import Console

        from raysearch.experiment.report import SUMMARY_MD

        con = Console(width=200)
        con.print((res.out_dir / SUMMARY_MD).read_text(), markup=False)
        con.print(f"outputs in {res.out_dir}: " + ", ".join(sorted(res.files)), markup=False)
        con.print(f"report: {res.files['report']}   wall time {res.wall_time_s:.0f} s", markup=False)
        if res.missing:
            fail(f"{res.missing} unit(s) failed or not run (experiment.parquet 'stop_reason'/'error'); "
                 f"continue with --resume --out {res.out_dir}", code=1)
