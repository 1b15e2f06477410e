"""Experiment throughput (issue 21 row f): ``raysearch experiment --tune`` on the MovieLens posters
with the frozen-feature MLP space, at a reduced scale, on the engine the CLI runs
(:func:`raysearch.experiment.run_experiment`, in this process).

Prints inner trials per hour, units per hour (one unit = one arm on one (ratio, fold, seed)) and
paired units per hour (one (ratio, fold, seed) with every arm), where the wall time went (start-up,
the inner searches, the units, the outputs; inside the searches: the trials' training, their wait
for data, the data owner's compute), and a *projection* of the README's full posters protocol
(5 folds x 3 seeds x 2 ratios, 4 arms + 3 shuffled controls, ``--tune 6``: 40 inner searches of 6
trials, 210 units) from those rates.

The image cache and the frozen trunk's features (one-off per machine) are warmed before the clock
starts; the CF cache is emptied (every fold's CF fits are counted, as in a fresh run).

    RAYSEARCH_HOME=/tmp/rs-home-f raysearch prepare --dataset movielens --raw ../shared/data/movielens-posters
    RAYSEARCH_HOME=/tmp/rs-home-f nice -n 10 python bench/bench_experiment.py      # ~5-10 min on 2 CPUs
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

REPO = Path(__file__).resolve().parents[1]

#: the README's posters protocol
FULL = {"searches": 40, "trials_per_search": 6, "units": 210, "paired": 30, "arms": 7}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def warm_caches(dataset: str, space_path: str) -> float:
    """Image cache + frozen-trunk features of the space's base config (one-off per machine)."""
    import dataclasses

    from raysearch.search.space import load_space
    from raysearch.train import prepare_training_data
    from raysearch.train.loop import _source, build_model

    t0 = time.perf_counter()
    base = load_space(space_path).base
    run = dataclasses.replace(base, dataset=dataset, train=dataclasses.replace(base.train, method="image_only"))
    data = prepare_training_data(run)
    model, split_at = build_model(run, data)
    import torch

    _source(run, data, model, split_at, torch.device("cpu"))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="movielens")
    ap.add_argument("--tune-space", default=str(REPO / "search_spaces" / "movielens-mlp.yaml"))
    ap.add_argument("--variants", default="image_only,mtl:uniform")
    ap.add_argument("--shuffle-control", default="none")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--label-ratios", default="0.1")
    ap.add_argument("--tune", type=int, default=2)
    ap.add_argument("--max-concurrent", type=int, default=None)
    ap.add_argument("--keep-cf-cache", action="store_true", help="do not empty the CF cache first")
    ap.add_argument("--out", default=None, help="experiment folder (default: a temp dir, removed at the end)")
    ap.add_argument("--wandb", action="store_true",
                    help="log every unit to W&B (offline), as the CLI does by default (inner trials are not logged); off: the engine alone")
    a = ap.parse_args()
    if a.wandb:
        os.environ["WANDB_MODE"] = "offline"  # never an upload, even with WANDB_API_KEY set

    print(f"load average at start: {_load()}  (cpus: {os.cpu_count()})", flush=True)
    from raysearch import paths
    from raysearch.experiment import ExperimentConfig, run_experiment
    import raysearch.experiment.protocol as protocol
    import raysearch.experiment.report as report
    import raysearch.search.tune as tune_mod

    warm_s = warm_caches(a.dataset, a.tune_space)
    print(f"image cache + frozen features warmed in {warm_s:.1f} s (one-off, not timed below)", flush=True)
    if not a.keep_cf_cache:
        shutil.rmtree(paths.cache_dir("cf"), ignore_errors=True)

    phases: dict[str, float] = {"inner searches": 0.0, "units": 0.0, "outputs": 0.0}
    sweeps: list[float] = []

    def timed(name, fn, per_call=None):
        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                dt = time.perf_counter() - t0
                phases[name] += dt
                if per_call is not None:
                    per_call.append(dt)
        return wrapper

    phases["inner phase"] = 0.0
    tune_mod.run_sweep = timed("inner searches", tune_mod.run_sweep, sweeps)
    protocol.run_tuning = timed("inner phase", protocol.run_tuning)  # the searches as a whole (they may overlap)
    protocol._Engine.run_units = timed("units", protocol._Engine.run_units)
    report.write_outputs = timed("outputs", report.write_outputs)

    tmp = None
    out = a.out
    if out is None:
        tmp = tempfile.mkdtemp(prefix="bench-exp-")
        out = str(Path(tmp) / "exp")
    cfg = ExperimentConfig(dataset=a.dataset, variants=tuple(a.variants.split(",")), seeds=a.seeds, folds=a.folds,
                           label_ratios=tuple(float(x) for x in a.label_ratios.split(",")),
                           shuffle_control=a.shuffle_control, tune=a.tune, tune_space=a.tune_space,
                           max_concurrent=a.max_concurrent, out=out, n_boot=1000, wandb=a.wandb, cf_tables=False)
    print(f"experiment: --tune {a.tune} --variants {a.variants} --shuffle-control {a.shuffle_control} --folds {a.folds} "
          f"--seeds {a.seeds} --label-ratios {a.label_ratios} --out {out} "
          f"(W&B {'offline, one run per unit' if a.wandb else 'off'})", flush=True)
    t0 = time.perf_counter()
    res = run_experiment(cfg)
    wall = time.perf_counter() - t0
    import pandas as pd

    outp = Path(out)
    tuning = pd.read_parquet(outp / "tuning.parquet")
    units = res.units
    trials = []
    owner_s: dict[str, float] = {}  # per owner: its compute (an owner shared by searches: its last, cumulative, counters)
    for d in sorted(glob.glob(str(outp / "tuning" / "*" / "results.parquet"))):
        trials.append(pd.read_parquet(d))
        st = Path(d).parent / "shared_objects.json"
        if st.is_file():
            stats = json.loads(st.read_text())
            who = stats.get("shared_owner") or d
            owner_s[who] = max(owner_s.get(who, 0.0), sum(stats.get("compute_s", {}).values()))
    n_owners, owner_s = len(owner_s), sum(owner_s.values())
    tr = pd.concat(trials, ignore_index=True)
    n_searches, n_trials, n_units = len(tuning), len(tr), len(units)
    arms = units["variant"].nunique()
    n_paired = n_units // max(arms, 1)
    inner = phases["inner phase"]
    unit_s = phases["units"]
    other = wall - inner - unit_s - phases["outputs"]

    print("\n== where the wall time went ==")
    print(f"total wall {wall:.1f} s")
    print(f"  start-up (dataset, configs, Ray)  {other:7.1f} s")
    print(f"  inner searches ({n_searches})        {inner:7.1f} s  (sum of run_sweep calls {phases['inner searches']:.1f} s; "
          f"per search: mean {inner / max(n_searches, 1):.1f} s)")
    print(f"      trials: {n_trials}, epochs {int(tr['epochs_run'].sum())}, sum of trial wall {tr['wall_time_s'].sum():.1f} s = "
          f"training {tr['train_time_s'].sum():.1f} s + wait for data {tr['data_s'].sum():.1f} s + "
          f"other {tr['wall_time_s'].sum() - tr['train_time_s'].sum() - tr['data_s'].sum():.1f} s "
          f"(process start, imports, checkpoints, test eval)")
    print(f"      data owners' compute (dataset, images, CF fits, weights): {owner_s:.1f} s over {n_owners} owner(s) for {n_searches} searches")
    print(f"  units ({n_units})                  {unit_s:7.1f} s  (training {units['train_time_s'].sum():.1f} s, "
          f"wait for data {units['data_s'].sum():.1f} s, epochs {int(units['epochs_run'].sum())})")
    print(f"  outputs (stats, figures, report)  {phases['outputs']:7.1f} s")

    print("\n== throughput ==")
    tph = n_trials / inner * 3600 if inner else float("nan")
    uph = n_units / unit_s * 3600 if unit_s else float("nan")
    print(f"inner trials per hour: {tph:.0f}   ({n_trials} trials in {inner:.0f} s; "
          f"{inner / max(n_searches, 1):.1f} s per search of {a.tune} trials)")
    print(f"units per hour (units phase): {uph:.0f}   ({n_units} units of {arms} arms in {unit_s:.0f} s)")
    e2e = n_paired / wall * 3600
    print(f"paired units per hour, --tune included (end to end): {e2e:.1f}   ({n_paired} paired units x {arms} arms "
          f"in {wall:.0f} s)")
    print(f"test mAP by arm: " + ", ".join(f"{k} {v:.4f}" for k, v in units.groupby('variant')['test_map'].mean().items()))

    # projection: an inner search = a fixed part (its owner's and trial processes' start-up, the wait
    # for data, the tail: everything but training) + each trial's training on `slots` cores; trials past
    # the first `slots` reuse their actors and cost what a unit costs beyond its training (measured here)
    slots = max(1, int(a.max_concurrent or (os.cpu_count() or 1)))
    train_slot = tr["train_time_s"].mean() / slots
    fixed = max(0.0, inner / max(n_searches, 1) - a.tune * train_slot)
    unit_over = max(0.0, unit_s * slots / max(n_units, 1) - units["train_time_s"].mean()) / slots
    per_search = fixed + FULL["trials_per_search"] * train_slot + max(0, FULL["trials_per_search"] - a.tune) * unit_over
    proj_inner = FULL["searches"] * per_search
    proj_units = FULL["units"] / uph * 3600 if unit_s else float("nan")
    proj = other + proj_inner + proj_units + phases["outputs"] * FULL["arms"] / max(arms, 1)
    print("\n== PROJECTION (a model, not a measurement) of the README's full posters protocol ==")
    print(f"per inner search of 6 trials: {fixed:.1f} s fixed (start-up, data wait, tail) + 6 x {train_slot:.1f} s "
          f"training per trial on {slots} slots + {max(0, 6 - a.tune)} x {unit_over:.1f} s per reused-actor trial "
          f"= {per_search:.0f} s (ASHA's shorter trials at 6 not modelled: an upper bound)")
    print(f"40 inner searches {proj_inner / 60:.1f} min + 210 units at {uph:.0f}/h {proj_units / 60:.1f} min + "
          f"start-up/outputs {(other + phases['outputs'] * FULL['arms'] / max(arms, 1)) / 60:.1f} min "
          f"= ~{proj / 60:.0f} min (goal: 45 min)")
    print(f"\nload average at end: {_load()}", flush=True)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
