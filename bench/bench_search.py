"""Search-engine benchmark, side by side in one run (one local Ray instance):

(a) per-trial overhead = (sweep wall time - sum of the trials' training time) / trials,
    trials run one at a time with actor reuse, first trial, data owner start-up and first-use CF
    fits included (the CF cache is emptied before each variant), with the searcher ``raysearch
    tune`` uses (TPE; ``--overhead-search random`` for random configs): the engine as of 585f821
    ("before": a checkpoint every epoch, CF fitted on the first request, the owner's imports
    before the first trial), now with checkpoints spaced by the 5% budget alone ("budget"), now
    ("after") and now without per-epoch checkpoints ("no-ckpt"), next to plain Ray Tune
    (OptunaSearch + ASHA, a function trainable that makes as many reports as the current engine's
    trials ran epochs, reuse_actors) in the same Ray instance;
(b) peak memory of 1 vs 2 concurrent trials (sum of PSS over all ``ray::`` worker processes, which
    counts the shared object-store pages once, plus the largest private USS of one process);
(c) OptunaSearch (TPE) + ASHA vs random search without early stopping at the same trial budget
    on the synthetic world: best val mAP reached (and its test mAP), total epochs spent; TPE+ASHA
    as of 585f821 (the space's grace 2 / rf 2, no seeded first trial) and now (the space's base
    config enqueued as TPE's first trial, ``--grace``/``--rf``).

    python bench/bench_search.py --parts ac            # ~20 min on 2 loaded CPUs
    python bench/bench_search.py --trials 16 --seeds 0 1 2
    # (c) on the real posters, with the space the README's posters sweeps use
    python bench/bench_search.py --dataset movielens --space search_spaces/movielens-cpu.yaml \
        --parts c --trials 12 --seeds 0 1 2 --rf 4 --space-asha

Everything runs with the real engine (``raysearch.search.tune.run_sweep``); numbers are printed
as ratios so they can be compared across machines.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class MemorySampler:
    """Polls every Ray worker process (``ray::...``) and keeps the peaks."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_pss = 0
        self.peak_uss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _ray_workers() -> list[int]:
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::") and "IDLE" not in cmd:
                pids.append(int(d.name))
        return pids

    @staticmethod
    def _smaps(pid: int) -> tuple[int, int]:
        """(PSS, USS) in bytes from /proc/PID/smaps_rollup (Linux; no psutil needed)."""
        pss = uss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            k, _, v = line.partition(":")
            if k == "Pss":
                pss = int(v.split()[0]) * 1024
            elif k in ("Private_Clean", "Private_Dirty"):
                uss += int(v.split()[0]) * 1024
        return pss, uss

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self._ray_workers():
                try:
                    pss, uss = self._smaps(pid)
                except (OSError, ValueError):
                    continue
                total += pss
                self.peak_uss = max(self.peak_uss, uss)
            self.peak_pss = max(self.peak_pss, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemorySampler":
        self._t.start()
        return self

    def __exit__(self, *a) -> None:
        self._stop.set()
        self._t.join()


def _space_file(out: Path, epochs: int, image_size: int) -> str:
    data = yaml.safe_load((REPO / "search_spaces" / "synthetic.yaml").read_text())
    data["base"]["train"]["epochs"] = epochs
    data["base"]["train"]["image_size"] = image_size
    p = out / f"space-{epochs}-{image_size}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--space", default=None,
                    help="search-space YAML (default: search_spaces/synthetic.yaml with --epochs, 32 px)")
    ap.add_argument("--trials", type=int, default=16, help="budget for (c), per search strategy")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--overhead-trials", type=int, default=6)
    ap.add_argument("--memory-trials", type=int, default=4)
    ap.add_argument("--memory-image-size", type=int, default=96, help="larger images make sharing visible")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--parts", default="abc", help="which of (a) (b) (c) (n) to run, e.g. 'b'")
    ap.add_argument("--noise-seeds", type=int, default=8, help="(n) training seeds per config")
    ap.add_argument("--overhead-search", default="optuna", choices=["optuna", "random"],
                    help="(a) searcher: optuna (TPE, what `raysearch tune` runs) or random")
    ap.add_argument("--rounds", type=int, default=2, help="(a) before/after pairs, order alternated (load noise)")
    ap.add_argument("--grace", type=int, default=1, help="(c) 'after': ASHA grace period")
    ap.add_argument("--rf", type=int, nargs="+", default=[3], help="(c) 'after': ASHA reduction factor(s)")
    # default val_map: the commands quoted for runs 1-8 (before --rung-metric) still run what they ran, but
    # for --space-asha arms, which take the space file's ASHA settings as it ships them at the time
    from raysearch.choices import RUNG_METRICS

    ap.add_argument("--rung-metric", nargs="+", default=["val_map"], choices=RUNG_METRICS.names(),
                    help="(c) the metric(s) ASHA compares at its rungs in the --rf arms (and the --decompose, "
                         "--startup-arm, --no-seed-arm ones): one arm per --rf and metric; the shipped synthetic "
                         "space: --rf 5 --rung-metric val_auc")
    ap.add_argument("--retrain-seeds", type=int, default=3,
                    help="(c) training seeds each sweep's pick is retrained with, judged on test mAP (0: no retraining)")
    ap.add_argument("--skip-before", action="store_true", help="(c) leave out the 585f821 engine")
    ap.add_argument("--space-asha", action="store_true",
                    help="(c) also run TPE+ASHA now with the space file's own ASHA settings (grace, rf, rung metric) "
                         "as it ships them at the time: like for like with 585f821 when the space had its grace 2 / rf 2")
    ap.add_argument("--no-seed-arm", action="store_true",
                    help="(c) also run each --rf arm without the space's base config as TPE's first trial")
    ap.add_argument("--startup-arm", type=int, default=0,
                    help="(c) also run each --rf arm with TPE starting from this many random trials "
                         "(raysearch's TPE: max(3, min(10, trials // 3)))")
    ap.add_argument("--decompose", action="store_true",
                    help="(c) also run random search with each --rf ASHA and TPE without early stopping: which of "
                         "the two, searcher or scheduler, moves the pick against random+fifo")
    args = ap.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="bench-search-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAYSEARCH_HOME", str(out / "home"))
    import ray

    from raysearch.search.shared import DATA_CPUS
    from raysearch.search.tune import SweepConfig, run_sweep

    # as raysearch.search.cluster.init_ray: the data owner's CPU on top of the trials' CPUs
    ray.init(num_cpus=args.cpus + DATA_CPUS, include_dashboard=False, log_to_driver=False, namespace="raysearch",
             configure_logging=False)
    common = dict(dataset=args.dataset, storage=str(out / "runs" / time.strftime("%Y%m%d-%H%M%S")), wandb=False)
    space = args.space or _space_file(out, args.epochs, 32)

    # warm the dataset/image/CF caches once so (a)-(c) measure the engine, not first-use generation
    run_sweep(SweepConfig(**common, space=space, trials=2, name="warmup", scheduler="none", search="random",
                          max_concurrent=1, epochs=1))

    # (a) per-trial overhead, sequential trials
    if "a" in args.parts:
        overhead_part(args, common, space, run_sweep)
    if "b" in args.parts:
        memory_part(args, common, out, run_sweep)
    if "c" in args.parts:
        compare_part(args, common, space, run_sweep)
    if "n" in args.parts:
        noise_part(args, space)
    print(f"\noutputs under {out}")
    ray.shutdown()


#: SweepConfig settings that restore the engine of commit 585f821 (the "before" columns)
BEFORE = dict(checkpoint_overhead=0.0, prefetch_cf=False, seed_defaults=False)


def _plain_tune_overhead(trials: int, reports: int) -> float:
    """Seconds per trial of plain Ray Tune: OptunaSearch + ASHA, a function trainable that only
    reports ``reports`` epochs, reuse_actors=True (Ray start-up excluded).

    Every trial reports the same score, so ASHA stops none and each makes all ``reports`` reports,
    as the engine's trials (scheduler none) run all their epochs (a score rising with ``x``, as
    before, let ASHA stop most trials at its first rungs, so the floor paid fewer reports)."""
    import shutil

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config):
        for _ in range(reports):
            tune.report({"score": 1.0})

    from raysearch.search.tune import _auto_loggers

    storage = tempfile.mkdtemp(prefix="plain-tune-")
    t0 = time.perf_counter()
    grid = tune.Tuner(trainable, param_space={"x": tune.uniform(0, 1)},
                      tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=trials,
                                                  max_concurrent_trials=1, search_alg=OptunaSearch(),
                                                  scheduler=ASHAScheduler(max_t=reports), reuse_actors=True),
                      run_config=tune.RunConfig(storage_path=storage, verbose=0,
                                                callbacks=_auto_loggers([]))).fit()
    per_trial = (time.perf_counter() - t0) / trials
    made = sum(len(r.metrics_dataframe) for r in grid)
    shutil.rmtree(storage, ignore_errors=True)
    if made != trials * reports:
        raise RuntimeError(f"plain Tune floor: {made} reports made, {trials * reports} wanted (not like for like)")
    return per_trial


def _trial_reports(result) -> list[list[dict]]:
    """Each trial's reports, in order (Tune's result.json; one file per trial, or an error)."""
    import json

    out = [[json.loads(line) for line in f.read_text().splitlines() if line.strip()]
           for f in Path(result.run_dir).glob("*/result.json")]
    if len(out) != len(result.results):
        raise RuntimeError(f"{len(out)} result.json files under {result.run_dir} for {len(result.results)} trials")
    return out


def _checkpoints_reported(reports: list[list[dict]]) -> int:
    """The sweep's per-epoch reports that carried a checkpoint (its trials' final reports left out)."""
    return sum(1 for rows in reports for r in rows if r.get("checkpoint_dir_name") and not r.get("final"))


def _first_report_s(reports: list[list[dict]], started: float) -> float:
    """Seconds from the sweep's start to the first epoch result any trial reported."""
    firsts = [float(rows[0].get("reported_at", "nan")) for rows in reports if rows]
    return min(firsts) - started if firsts else float("nan")


def _print_owner(stats: dict, indent: str = "      ") -> None:
    """(a'') the data owner's compute per distinct CF configuration, next to the fit's epochs."""
    for fit in sorted(stats.get("cf_fits", {}).values(), key=lambda f: -f["seconds"]):
        print(f"{indent}{fit['seconds']:6.2f} s  {fit['cf']}  [{fit['how']}]")


def overhead_part(args, common, space, run_sweep) -> None:
    """(a) per-trial overhead, sequential trials: before / after / plain Ray Tune, one Ray instance.

    Orchestration per trial = (sweep wall - training - per-epoch validation - the trials' wait for
    their data) / trials: what the engine adds around the work a user's trainable would do anyway.
    Plain Ray Tune reports as many epochs per trial as the engine's trials ran on average (like
    for like: Tune's per-report cost is part of both); its 3-report figure is printed too.
    (a') the first trial: the sweep's start to the first epoch result, minus the data owner's
    compute for that trial (its cold start, images, split and CF fit), shown as its own figure.
    """
    import shutil
    import statistics as st

    from raysearch import paths
    from raysearch.search.tune import SweepConfig

    rows = []
    plain, plain3 = [], []
    for rnd in range(args.rounds):
        # "no-ckpt": the engine now without per-epoch checkpoints, like for like with plain Tune (which
        # saves none); "budget": checkpoints spaced by the --checkpoint-overhead budget alone
        # (--checkpoint-mtbf 0, the engine before Young's interval was added); "after": as shipped
        order = (("before", BEFORE), ("budget", {"checkpoint_mtbf": 0.0}), ("after", {}),
                 ("no-ckpt", {"checkpoint_every": 0}))
        for label, kw in (order if rnd % 2 == 0 else order[::-1]):
            shutil.rmtree(paths.cache_dir("cf"), ignore_errors=True)  # both pay the same first-use CF fits
            started = time.time()
            a = run_sweep(SweepConfig(**common, space=space, trials=args.overhead_trials, name=f"overhead-{label}-{rnd}",
                                      scheduler="none", search=args.overhead_search, max_concurrent=1, seed=7, **kw))
            reports = _trial_reports(a)
            rows.append((label, a, _first_report_s(reports, started), _checkpoints_reported(reports)))
        # the floor's reports per trial: the current engine's epochs per trial ("before" runs other configs)
        n_reports = round(st.mean(float(r[1].results["epochs_run"].mean()) for r in rows[-len(order):]
                                if r[0] != "before"))
        plain.append(_plain_tune_overhead(args.overhead_trials, n_reports))
        plain3.append(_plain_tune_overhead(args.overhead_trials, 3))
    plain, plain3 = st.mean(plain), st.mean(plain3)
    print(f"\n(a) per-trial overhead ({args.overhead_trials} trials, 1 concurrent, actors reused, first trial and"
          f" first-use CF fits included; {args.rounds} rounds; load {os.getloadavg()[0]:.1f})")
    for label, a, first, ckpts in rows:
        df = a.results
        train, ev, data = (float(df[c].sum()) for c in ("train_time_s", "eval_time_s", "data_s"))
        orch = (a.wall_time_s - train - ev - data) / len(df)
        print(f"    {label:<7} sweep wall {a.wall_time_s:6.1f} s = training {train:5.1f} + validation {ev:4.1f} + data wait "
              f"{data:4.1f} + orchestration {orch * len(df):4.1f} s ({orch:.2f} s/trial, {orch / plain:.2f}x plain Tune); "
              f"{int(df['epochs_run'].sum())} epochs, {ckpts} mid-trial checkpoints; best val {df['best_val_map'].max():.4f}")
        first_c = next(iter(a.shared_stats.get("compute_s", {}).values()), float("nan"))  # the first request's
        first_data = float(df["data_s"].iloc[0])
        print(f"      (a') first epoch result {first:.1f} s after the sweep started; the first trial waited {first_data:.1f} s"
              f" for its data (owner's compute for it {first_c:.1f} s) -> {first - first_data:.1f} s without that wait")
        _print_owner(a.shared_stats)
    print(f"    plain Ray Tune (OptunaSearch + ASHA, {n_reports} reports/trial like the engine's trials): {plain:.3f} s/trial;"
          f" with 3 reports/trial {plain3:.3f} s/trial")
    for label in ("before", "budget", "after", "no-ckpt"):
        sel = [(a.wall_time_s - sum(float(a.results[c].sum()) for c in ("train_time_s", "eval_time_s", "data_s")))
               / len(a.results) for lab, a, *_ in rows if lab == label]
        with_eval = [(a.wall_time_s - float(a.results["train_time_s"].sum()) - float(a.results["data_s"].sum()))
                     / len(a.results) for lab, a, *_ in rows if lab == label]
        orch = st.mean(sel)
        print(f"    orchestration/trial, {label:<7}: {orch:.3f} s = {orch / plain:.2f}x plain Ray Tune "
              f"(validation counted as overhead: {st.mean(with_eval):.3f} s = {st.mean(with_eval) / plain:.2f}x)")


def memory_part(args, common, out, run_sweep) -> None:
    """(b) peak memory, 1 vs 2 concurrent trials (same trials, same configs)."""
    from raysearch.search.tune import SweepConfig

    mspace = _space_file(out, 4, args.memory_image_size)
    mem = {}
    for k in (1, 2):
        with MemorySampler() as ms:
            r = run_sweep(SweepConfig(**common, space=mspace, trials=args.memory_trials, name=f"memory-{k}",
                                      scheduler="none", search="random", max_concurrent=k, seed=3))
        mem[k] = (ms.peak_pss, ms.peak_uss, r.wall_time_s)
    from raysearch.data import load_dataset

    n_items = load_dataset(args.dataset).n_items
    img_mb = n_items * args.memory_image_size ** 2 * 3 / 2 ** 20
    print(f"\n(b) peak memory of Ray worker processes (images {n_items}x{args.memory_image_size}px = {img_mb:.1f} MiB uint8,"
          " one ray.put)")
    for k, (pss, uss, wall) in mem.items():
        print(f"    {k} concurrent: peak total PSS {pss / 2**20:.0f} MiB, largest private USS {uss / 2**20:.0f} MiB,"
              f" sweep {wall:.1f} s")
    extra = (mem[2][0] - mem[1][0]) / 2 ** 20
    print(f"    ratio PSS 2/1 = {mem[2][0] / max(mem[1][0], 1):.2f}; the 2nd trial adds {extra:.0f} MiB "
          f"(a trial process with its model and batches; an image copy would add {img_mb:.1f} MiB more)")



def _retrain_test(config_json: str, seeds: list[int], cache: dict) -> float:
    """Mean test mAP of one picked configuration retrained with ``seeds`` (``train.seed``; split and
    CF fixed): what a user keeps from a sweep, judged on test items it never selected on."""
    import json
    import statistics as st

    import torch

    from raysearch.config import RunConfig, from_dict
    from raysearch.train import fit, prepare_training_data

    if config_json in cache:
        return cache[config_json]
    torch.set_num_threads(1)
    d = json.loads(config_json)
    data = prepare_training_data(from_dict(RunConfig, d, where="picked config"), data_root=d.get("data_root"))
    tests = []
    for seed in seeds:
        d["train"]["seed"] = seed
        tests.append(fit(from_dict(RunConfig, d, where="picked config"), data).test_map)
    cache[config_json] = st.mean(tests)
    return cache[config_json]


def _register_tpe_startup(n: int) -> str:
    """A searcher choice ``optuna-s<n>``: raysearch's TPE (multivariate, the base config seeded)
    with ``n_startup_trials=n``; the sampler is built in this (driver) process."""
    from dataclasses import replace

    from raysearch.choices import SEARCHERS, tpe_sampler

    name = f"optuna-s{n}"
    SEARCHERS.register(name, obj=replace(SEARCHERS.get("optuna"), name=name,
                                         sampler=lambda cfg: tpe_sampler(cfg.seed, n)))
    return name


def compare_part(args, common, space, run_sweep) -> None:
    """(c) TPE + ASHA (before / after) vs random without early stopping, same trial budget, each
    sweep run once per searcher seed.  What a user keeps is the trial the sweep picks
    (``best_row``: best val mAP among trials that ran their schedule), so each pick is retrained with
    ``--retrain-seeds`` training seeds and judged on *test* mAP; searchers are compared paired by
    searcher seed (mean difference, 95% t interval over seeds, paired t and Wilcoxon p)."""
    import statistics as st

    import numpy as np

    from raysearch.experiment.stats import mean_t_interval, paired_unit_tests
    from raysearch.search.results import best_row
    from raysearch.search.tune import SweepConfig

    variants = [("random+fifo", "random", "none", {})]
    if not args.skip_before:
        # 585f821's synthetic space had grace 2 / rf 2 (the shipped one has grace 1 / rf 5 on val AUC since)
        variants.append(("tpe+asha-585f821", "optuna", "asha",
                         {**BEFORE, "grace_period": 2, "reduction_factor": 2, "rung_metric": "val_map"}))
    def asha(rf: int, m: str, **kw) -> dict:
        return {"grace_period": args.grace, "reduction_factor": rf, "rung_metric": m, **kw}

    def tag(m: str) -> str:  # val_map arms keep the labels of the runs before --rung-metric existed
        return "" if m == "val_map" else f"-{m.split('_')[1]}"

    arms = [(rf, m) for rf in args.rf for m in args.rung_metric]
    variants += [(f"tpe+asha-g{args.grace}rf{rf}{tag(m)}", "optuna", "asha", asha(rf, m)) for rf, m in arms]
    if args.startup_arm:  # TPE with another n_startup_trials, registered here as a searcher choice
        search = _register_tpe_startup(args.startup_arm)
        variants += [(f"tpe-s{args.startup_arm}+asha-g{args.grace}rf{rf}{tag(m)}", search, "asha", asha(rf, m))
                     for rf, m in arms]
    if args.no_seed_arm:  # TPE without the seeded first trial (seed_defaults=False), same ASHA
        variants += [(f"tpe+asha-g{args.grace}rf{rf}{tag(m)}-noseed", "optuna", "asha", asha(rf, m, seed_defaults=False))
                     for rf, m in arms]
    if args.decompose:  # one change at a time against random+fifo: the scheduler alone, the searcher alone
        variants += [(f"random+asha-g{args.grace}rf{rf}{tag(m)}", "random", "asha", asha(rf, m)) for rf, m in arms]
        variants.append(("tpe+fifo", "optuna", "none", {}))
    if args.space_asha:
        variants.insert(1 if args.skip_before else 2, ("tpe+asha-space", "optuna", "asha", {}))
    retrain_seeds = [1000 + k for k in range(args.retrain_seeds)]  # not the sweeps' own training seed
    cache: dict = {}
    rows = []
    for seed in args.seeds:
        for label, search, sched, kw in variants:
            r = run_sweep(SweepConfig(**common, space=space, trials=args.trials, name=f"cmp-{label}-{seed}",
                                      scheduler=sched, search=search, max_concurrent=args.cpus, seed=seed, **kw))
            df = r.results
            best = best_row(df)  # the trial the sweep picks (best.yaml): ran its whole schedule
            kept = _retrain_test(str(best["config"]), retrain_seeds, cache) if args.retrain_seeds else float("nan")
            rows.append(dict(label=label, seed=seed, val=float(best["best_val_map"]), test=float(best["test_map"]),
                             kept=kept, epochs=int(df["epochs_run"].sum()), wall=r.wall_time_s,
                             cut=int((df["stop_reason"] == "asha_stopped").sum())))
    print(f"\n(c) {args.trials} trials each, {args.epochs} epochs max, dataset {args.dataset}; each pick retrained with "
          f"{args.retrain_seeds} seeds (load {os.getloadavg()[0]:.1f})")
    print(f"    {'strategy':<18} {'seed':>4} {'pick val':>9} {'pick test':>9} {'retrained':>9} {'epochs':>7} {'wall s':>7}"
          f" {'asha-cut':>8}")
    for r in rows:
        print(f"    {r['label']:<18} {r['seed']:>4} {r['val']:>9.4f} {r['test']:>9.4f} {r['kept']:>9.4f} {r['epochs']:>7d}"
              f" {r['wall']:>7.1f} {r['cut']:>8d}")
    by = {(r["label"], r["seed"]): r for r in rows}
    rnd = "random+fifo"
    judge, what = ("kept", "retrained test") if args.retrain_seeds else ("test", "test (one training seed)")

    def paired(o: str, base: str, name: str) -> None:
        ref = np.array([by[(base, s)][judge] for s in args.seeds])
        oth = np.array([by[(o, s)][judge] for s in args.seeds])
        d = oth - ref
        _, half = mean_t_interval(d)
        p_t, p_w = paired_unit_tests(ref, oth)
        ep = st.mean(by[(o, s)]["epochs"] for s in args.seeds) / st.mean(by[(base, s)]["epochs"] for s in args.seeds)
        wall = st.mean(by[(o, s)]["wall"] for s in args.seeds) / st.mean(by[(base, s)]["wall"] for s in args.seeds)
        print(f"    {o} vs {name}: epochs {ep:.2f}x, wall {wall:.2f}x; {what} of the pick {oth.mean():.4f} vs "
              f"{ref.mean():.4f}: diff {d.mean():+.4f} [95% CI {d.mean() - half:+.4f}, {d.mean() + half:+.4f}] over "
              f"{len(d)} searcher seeds (paired t p = {p_t:.3f}, Wilcoxon p = {p_w:.3f}); at least as good on "
              f"{int((d >= 0).sum())}/{len(d)} seeds")

    labels = [o for o, *_ in variants[1:]]
    for o in labels:
        paired(o, rnd, "random")
    # the same arm judging its rungs on val AUC against val mAP, on the same searcher seeds
    for o in labels:
        if o.endswith("-auc") and o[:-len("-auc")] in labels:
            paired(o, o[:-len("-auc")], f"{o[:-len('-auc')]} (head to head)")


#: (n) configs, for the synthetic space: its base (TPE's seeded first trial) and random search's best
#: trial of (c) seed 1 (learning rate 9.6e-3)
NOISE_CONFIGS = {
    "base config (lr 1e-3)": {},
    "lr 9.6e-3": {"train.weighting": "loss", "train.alpha": 0.0914, "train.omega": 7.7513, "train.lr": 0.0096,
                  "train.weight_decay": 0.0010, "cf.model": "bpr", "cf.dim": 32},
}


def noise_part(args, space_file: str) -> None:
    """(n) How noisy is one trial's best val mAP?  The same config trained with different seeds
    (``train.seed``; split and CF fixed), in this process: the yardstick for (c)'s differences."""
    import statistics as st

    import torch

    from raysearch.config import RunConfig, from_dict, to_dict
    from raysearch.search.space import load_space
    from raysearch.train import fit, prepare_training_data

    torch.set_num_threads(1)
    space = load_space(space_file).with_base(dataset=args.dataset, data_root=None)
    print(f"\n(n) seed noise: {args.noise_seeds} training seeds per config, {space.base.train.epochs} epochs, "
          f"dataset {args.dataset}")
    for name, params in NOISE_CONFIGS.items():
        d = to_dict(space.apply(params, space.base))
        data = prepare_training_data(from_dict(RunConfig, d, where="noise config"), data_root=None)  # seed-free
        vals, tests = [], []
        for seed in range(args.noise_seeds):
            d["train"]["seed"] = seed
            res = fit(from_dict(RunConfig, d, where="noise config"), data)
            vals.append(res.best_val_map)
            tests.append(res.test_map)
        print(f"    {name:<22} best val {st.mean(vals):.4f} +- {st.stdev(vals):.4f} (min {min(vals):.4f}, "
              f"max {max(vals):.4f}); test {st.mean(tests):.4f} +- {st.stdev(tests):.4f}")


if __name__ == "__main__":
    sys.exit(main())
