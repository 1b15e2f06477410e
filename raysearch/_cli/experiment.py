"""``raysearch experiment``: the paired cross-validated comparison (see raysearch.experiment)."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from raysearch._cli import emit_json, fail, given_flags, guarded
from raysearch._cli.options import (
    Address, CheckpointEvery, CpusPerTrial, DataRoot, Dataset, Epochs, GpusPerTrial, JsonOut, MaxConcurrent,
    MaxFailures, NoWandb, SplitSeed, WandbProject, WorkersPerTrial, add,
)

FromSweep = Annotated[Optional[List[str]], typer.Option(
    "--from-sweep", help="Sweep run dir(s): each variant runs at its own group's best finished trial (by val mAP).")]
Configs = Annotated[Optional[List[str]], typer.Option(
    "--config", help="RunConfig YAML for every variant, or VARIANT=FILE (repeatable).")]
Variants = Annotated[Optional[str], typer.Option(
    "--variants", help="Comma-separated method[:weighting] (methods: {methods}; weightings: {weightings}); "
                       "image_only is always the reference. Default: {default_variants}.")]
Seeds = Annotated[int, typer.Option("--seeds", help="Training seeds per fold.")]
Folds = Annotated[int, typer.Option("--folds", help="K of the K-fold cross-validation over items.")]
LabelRatios = Annotated[str, typer.Option(
    "--label-ratios", help="Comma-separated fractions of train items keeping labels.")]
ShuffleControl = Annotated[str, typer.Option(
    "--shuffle-control", help="Shuffled-CF control arms: {shuffle_controls} (first: the first mtl/sequential arm; all: "
                              "one per mtl/sequential arm), each at its arm's configuration with CF targets permuted "
                              "across items.")]
SameConfig = Annotated[Optional[str], typer.Option(
    "--same-config", help="Run every weighting of this variant's method at its configuration (e.g. mtl:loss): "
                          "the arms then differ in the weighting only.")]
Tune = Annotated[int, typer.Option(
    "--tune", help="Nested tuning: inner TPE + ASHA trials per outer fold and tuned arm, on the fold's train/val "
                   "items only (0: none; arms run at their --config/--from-sweep configuration).")]
TuneSpace = Annotated[Optional[str], typer.Option(
    "--tune-space", help="Search space of the inner searches (default: the dataset's).")]
KeepModels = Annotated[bool, typer.Option(
    "--keep-models", help="Keep each unit's model.pt (default: its report and test scores only).")]
OutDir = Annotated[Optional[str], typer.Option(
    "--out", help="Output directory (default <home>/runs/experiment-<dataset>-<time>).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the interrupted experiment in --out.")]
ReportOnly = Annotated[bool, typer.Option(
    "--report-only", help="Write the outputs from the units finished so far (implies --resume); run none "
                          "and start no Ray.")]
NBoot = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples of the items.")]
NoCfTables = Annotated[bool, typer.Option("--no-cf-tables", help="Skip the CF AUC / CF2Label tables.")]


def _floats(s: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError:
        fail(f"{flag} expects comma-separated numbers, got {s!r}")
        raise


def experiment(
    dataset: Dataset = "synthetic", from_sweep: FromSweep = None, config: Configs = None,
    variants: Variants = None, seeds: Seeds = 3, folds: Folds = 5,
    label_ratios: LabelRatios = "1.0", shuffle_control: ShuffleControl = "none", same_config: SameConfig = None,
    tune: Tune = 0, tune_space: TuneSpace = None, epochs: Epochs = None,
    out: OutDir = None, resume: Resume = False, report_only: ReportOnly = False, address: Address = None,
    cpus_per_trial: CpusPerTrial = 1.0, gpus_per_trial: GpusPerTrial = 0.0, workers_per_trial: WorkersPerTrial = 1,
    max_failures: MaxFailures = 2, checkpoint_every: CheckpointEvery = 1, keep_models: KeepModels = False,
    max_concurrent: MaxConcurrent = None, split_seed: SplitSeed = 0,
    n_boot: NBoot = 1000, no_cf_tables: NoCfTables = False, wandb_project: WandbProject = "raysearch",
    no_wandb: NoWandb = False, data_root: DataRoot = None, json_out: JsonOut = False,
) -> None:
    """Does the CF task help, which weighting scheme, at which label ratio: K folds x seeds, paired tests, CIs."""
    import contextlib
    import json
    import logging
    import sys

    from raysearch.experiment import ExperimentConfig, run_experiment

    given = {"variants": tuple(v.strip() for v in variants.split(",") if v.strip())} if variants is not None else {}
    cfg = guarded(lambda: ExperimentConfig(
        dataset=dataset, data_root=data_root, **given, seeds=seeds, folds=folds,
        label_ratios=_floats(label_ratios, "--label-ratios"),
        shuffle_control=shuffle_control, same_config=same_config, tune=tune, tune_space=tune_space,
        from_sweep=tuple(from_sweep or ()), configs=tuple(config or ()),
        epochs=epochs, out=out, resume=resume or report_only, report_only=report_only, address=address,
        cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, workers_per_trial=workers_per_trial,
        max_failures=max_failures, checkpoint_every=checkpoint_every, keep_models=keep_models,
        max_concurrent=max_concurrent, split_seed=split_seed, n_boot=n_boot,
        wandb=not no_wandb, wandb_project=wandb_project, cf_tables=not no_cf_tables))
    if (resume or report_only) and not out:
        fail("--resume / --report-only need the --out directory of the experiment")
    given = given_flags({"config": "configs", "no_wandb": "wandb", "no_cf_tables": "cf_tables"})
    if json_out:  # stdout carries the JSON only: Tune's progress tables go to stderr
        logging.getLogger("raysearch").setLevel(logging.WARNING)
        with contextlib.redirect_stdout(sys.stderr):
            res = guarded(lambda: run_experiment(cfg, given=given))
    else:
        res = guarded(lambda: run_experiment(cfg, given=given))
    summary = json.loads(res.summary.to_json(orient="records"))
    if json_out:
        return emit_json({"out_dir": str(res.out_dir), "summary": summary, "failed_units": res.missing})
    _print_experiment(res)


def _print_experiment(res) -> None:
    from rich.console import Console

    from raysearch.experiment.report import SUMMARY_MD

    con = Console(width=200)
    con.print((res.out_dir / SUMMARY_MD).read_text(), markup=False)
    from pathlib import Path

    # file names as they are on disk (the W&B entry is a run path, not a file here)
    names = sorted(Path(v).name if k != "wandb" else f"W&B {v}" for k, v in res.files.items())
    con.print(f"outputs in {res.out_dir}: " + ", ".join(names), markup=False)
    con.print(f"report: {res.files['report']}   wall time {res.wall_time_s:.0f} s", markup=False)
    if res.missing:
        fail(f"{res.missing} unit(s) failed or not run (experiment.parquet 'stop_reason'/'error'); "
             f"continue with --resume --out {res.out_dir}", code=1)


def register(app: typer.Typer) -> None:
    add(app, experiment)
