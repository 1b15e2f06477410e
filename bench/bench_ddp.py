"""Fixed start-up cost of a ``TorchTrainer`` (Ray Train V2) trial vs a function trial, side by side
in one local Ray instance (with the dashboard, which DDP sweeps need for placement-group cleanup):

    python bench/bench_ddp.py                 # 3 trials per sweep, 4 paired rounds, tiny_cnn at 16 px, 1 epoch
    python bench/bench_ddp.py --trials 4 --rounds 6 --workers 2

Per-trial overhead = the trial's wall time (Tune's ``time_total_s``) minus its training time
(``train_time_s``, the epochs themselves): what the trial costs before and around training.
The TorchTrainer path runs once with Ray Train's default 2 s controller poll and ``--rounds`` times
with raysearch's 0.25 s (the goal row below; its sweep wall time is not reported).
The first trial of each path is reported separately (worker processes start cold).
Next to them, Ray's floor: the wall time of ``TorchTrainer.fit()`` on an empty train function
(no Tune, no raysearch code), i.e. what any Train V2 run costs before it trains, and the same with
a train function that builds a ``torch.optim`` optimizer and takes one step (the imports any
PyTorch training pays in a fresh worker process).  Like for like with a raysearch DDP trial, the
same two run as plain Ray Tune trials that each build the ``TorchTrainer`` (Train V2 under Tune:
a fresh trial process per trial, which imports torch to build the trainer; no raysearch code).

The goal row (raysearch's DDP trial against plain Tune trials building a ``TorchTrainer`` that takes
one optimizer step) runs as ``--rounds`` paired rounds in ABBA order: the two floors move by 1-2 s
between minutes on a busy machine, so one measurement of each, minutes apart, compares the load
more than the code.  The bench prints each round's difference and their mean with a 95% t CI.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import yaml  # noqa: E402

SPACE = {
    "base": {"train": {"method": "image_only", "backbone": "tiny_cnn", "weights": "none", "image_size": 16,
                       "epochs": 1, "batch_size": 32}},
    "params": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
}


def _empty_train_fn(config) -> None:
    import ray.train

    ray.train.report({"done": 1})


def _torch_step_train_fn(config) -> None:
    """The least any PyTorch training does in a fresh worker: build an optimizer (its first use
    imports ``torch._dynamo``, ~1.5 s) and take one step."""
    import ray.train
    import torch

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    ray.train.report({"done": 1})


def _first_and_later(walls: list[float]) -> tuple[float, float]:
    """(first, mean of the later ones): the first run starts its worker processes cold."""
    return walls[0], sum(walls[1:]) / max(1, len(walls) - 1)


def _torch_trainer_floor(runs: int, storage: Path, fn=_empty_train_fn) -> tuple[float, float]:
    """Wall seconds of ``TorchTrainer.fit()`` on ``fn`` (no Tune, no raysearch code): (first, mean of later)."""
    import time

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    walls = []
    for i in range(runs):
        t = time.perf_counter()
        TorchTrainer(fn, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(name=f"floor-{fn.__name__}-{i}", storage_path=str(storage))).fit()
        walls.append(time.perf_counter() - t)
    return _first_and_later(walls)


def _tune_torch_trainer_floor(trials: int, storage: Path, fn=_empty_train_fn, name: str = "") -> tuple[float, float]:
    """Per-trial seconds (Tune's ``time_total_s``: first, mean of later) of plain Ray Tune trials that
    each build a ``TorchTrainer`` on ``fn`` and fit it, reporting through ``TuneReportCallback``: how
    Train V2 runs distributed trials under Tune (no raysearch code), like for like with a raysearch
    DDP trial (a fresh trial process per trial, which imports torch to build the trainer)."""
    from ray import tune

    from raysearch.search.cluster import DRIVER_RESOURCES

    def trial(config):
        from raysearch._ray_compat import set_train_health_check_interval

        set_train_health_check_interval(0.25)  # the poll raysearch's trials use (an env var only)
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        TorchTrainer(fn, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(name=f"tune-floor-{tune.get_context().get_trial_id()}",
                                          storage_path=str(storage), callbacks=[TuneReportCallback()])).fit()

    grid = tune.Tuner(tune.with_resources(trial, dict(DRIVER_RESOURCES)), param_space={"x": tune.uniform(0, 1)},
                      tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=1, reuse_actors=False),
                      run_config=tune.RunConfig(storage_path=str(storage), name=name or f"tune-floor-{fn.__name__}",
                                                verbose=0)).fit()
    walls = [float(r.metrics["time_total_s"]) for r in sorted(grid, key=lambda r: r.metrics["timestamp"])]
    return _first_and_later(walls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3, help="trials per sweep (the first is reported apart)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="paired rounds of (raysearch DDP sweep, plain Tune trials building a TorchTrainer), "
                         "ABBA order: the goal row's difference is their mean, with a 95%% t CI")
    ap.add_argument("--workers", type=int, default=1, help="TorchTrainer workers per trial")
    args = ap.parse_args()
    if args.rounds < 1 or args.trials < 2:
        ap.error("--rounds must be >= 1 and --trials >= 2 (later trials are what the rows compare); "
                 "an even --rounds balances the ABBA order")
    tmp = Path(tempfile.mkdtemp(prefix="raysearch-bench-ddp-"))
    os.environ.setdefault("RAYSEARCH_HOME", str(tmp / "home"))
    space = tmp / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))

    from raysearch._ray_compat import set_train_health_check_interval
    from raysearch.experiment.stats import mean_t_interval
    from raysearch.search.cluster import init_ray
    from raysearch.search.tune import SweepConfig, run_sweep

    init_ray(None, dashboard=True)
    common = dict(dataset="synthetic-tiny", space=str(space), trials=args.trials, max_concurrent=1,
                  scheduler="none", search="random", storage=str(tmp / "runs"), wandb=False)
    ddp = dict(torch_trainer=True, workers_per_trial=args.workers, cpus_per_trial=float(args.workers))
    parts: list[tuple[float, float]] = []  # per raysearch DDP sweep: data fetch + training imports, validation

    def sweep(name: str, **kw) -> tuple[float, float, float]:
        """(first, later) per-trial overhead (wall minus training) and the sweep's wall time."""
        res = run_sweep(SweepConfig(**common, name=name, **kw), progress=False)
        df = res.results
        if kw.get("torch_trainer") and kw.get("train_poll_s") is None:
            later = df.iloc[1:] if len(df) > 1 else df
            parts.append((float(later["data_s"].mean()), float(later["eval_time_s"].mean())))
        return (*_first_and_later((df["wall_time_s"] - df["train_time_s"]).tolist()), res.wall_time_s)

    rows = {"function trial": sweep("fn"),
            f"TorchTrainer x{args.workers}, Ray's 2 s poll": sweep("tt-ray-poll", **ddp, train_poll_s=2.0)}
    # Ray's own floors, with raysearch's poll interval (the env var the trials set)
    set_train_health_check_interval(0.25)
    floor_first, floor_later = _torch_trainer_floor(args.trials, tmp / "floor")
    step_first, step_later = _torch_trainer_floor(args.trials, tmp / "floor", _torch_step_train_fn)
    tune_first, tune_later = _tune_torch_trainer_floor(args.trials, tmp / "tune-floor")
    # the goal row, like for like and side by side: each round runs both, ABBA so drift cancels
    rounds = []  # (order, raysearch first, raysearch later, floor first, floor later, load)
    for r in range(args.rounds):
        order, out = ("rs", "floor") if r % 4 in (0, 3) else ("floor", "rs"), {}
        for which in order:
            out[which] = (sweep(f"tt-{r}", **ddp)[:2] if which == "rs" else
                          _tune_torch_trainer_floor(args.trials, tmp / "tune-floor", _torch_step_train_fn,
                                                    name=f"tune-floor-step-{r}"))
        rounds.append((", ".join(order), *out["rs"], *out["floor"], os.getloadavg()[0]))
    rs_first, rs_later, tstep_first, tstep_later = (statistics.fmean(col) for col in list(zip(*rounds))[1:5])
    rows[f"TorchTrainer x{args.workers}, 0.25 s poll"] = (rs_first, rs_later, float("nan"))

    print(f"{'path':<38} {'1st trial s':>12} {'later trials s':>15} {'sweep wall s':>13}")
    for label, (first, later, wall) in rows.items():
        print(f"{label:<38} {first:>12.1f} {later:>15.1f} {'-' if wall != wall else f'{wall:.1f}':>13}")
    (f_first, f_later, _), (r_first, r_later, _), (t_first, t_later, _) = rows.values()
    print(f"{'TorchTrainer.fit(), empty fn (Ray floor)':<38} {floor_first:>12.1f} {floor_later:>15.1f} {'-':>13}")
    print(f"{'TorchTrainer.fit(), one torch.optim step':<38} {step_first:>12.1f} {step_later:>15.1f} {'-':>13}")
    print(f"{'Tune trial -> TorchTrainer, empty fn':<38} {tune_first:>12.1f} {tune_later:>15.1f} {'-':>13}")
    print(f"{'Tune trial -> TorchTrainer, optim step':<38} {tstep_first:>12.1f} {tstep_later:>15.1f} {'-':>13}")
    print(f"(the 0.25 s poll path and the optim-step Tune floor: means over {args.rounds} paired rounds)")
    print(f"TorchTrainer overhead per later trial: {r_later:.1f} s with Ray's poll -> {t_later:.1f} s "
          f"({r_later / max(t_later, 1e-9):.1f}x less); function trial {f_later:.1f} s; "
          f"Ray's floor {floor_later:.1f} s ({t_later / max(floor_later, 1e-9):.2f}x of it)")
    d, e = (statistics.fmean(col) for col in zip(*parts))
    print(f"inside a later TorchTrainer trial: {d:.1f} s fetching its data while importing the training code "
          f"(torch._dynamo included), {e:.2f} s validation; the rest is Ray Train's start/stop, reports, "
          f"checkpoints and the model save")
    print(f"above Ray's floor: {t_later - floor_later:+.1f} s per later trial; above a TorchTrainer that only takes one "
          f"torch.optim step: {t_later - step_later:+.1f} s; like for like, above plain Ray Tune trials that each "
          f"build a TorchTrainer (a fresh trial process) on the empty fn: {t_later - tune_later:+.1f} s")
    print(f"\nlike for like, paired rounds (ABBA): raysearch DDP trial vs plain Ray Tune trials that each build a "
          f"TorchTrainer taking one torch.optim step, later trials (s)")
    print(f"{'round':>5} {'order':>12} {'raysearch':>10} {'plain Tune':>11} {'diff':>7} {'load':>6}")
    diffs = [rl - fl for _, _, rl, _, fl, _ in rounds]
    for r, ((order, _, rl, _, fl, load), diff) in enumerate(zip(rounds, diffs)):
        print(f"{r:>5} {order:>12} {rl:>10.2f} {fl:>11.2f} {diff:>+7.2f} {load:>6.1f}")
    mean, half = mean_t_interval(diffs)
    print(f"raysearch's own start-up per later DDP trial, like for like: {mean:+.2f} s, 95% CI "
          f"[{mean - half:+.2f}, {mean + half:+.2f}] (t over {len(diffs)} rounds); "
          f"rounds at or under +1 s: {sum(x <= 1.0 for x in diffs)}/{len(diffs)}")


if __name__ == "__main__":
    main()
