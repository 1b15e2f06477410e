"""Which per-epoch signal should ASHA judge its rungs on?  (``--rung-metric``)

Trains ``--configs`` random configurations of a search space (Optuna's RandomSampler, as
``raysearch tune --search random`` draws them) with ``--seeds`` training seeds each, in this
process, and prints, per epoch, the Spearman rank correlation across configurations between a
signal one training run sees at that epoch (its val mAP, its best val mAP so far, its macro val
ROC AUC) and what a user keeps from the configuration: its test mAP, averaged over the *other*
training seeds (leave-one-seed-out, so a run's own luck cannot correlate with itself).  The
difference between val AUC's and val mAP's correlation gets a 95% CI from a paired bootstrap over
the configurations (the unit: both correlations use the same configurations and targets).  A rung
cuts on the signal at its epoch: the higher the correlation there, the fewer good
configurations a cut throws away.

    python bench/bench_rung_signal.py --configs 64 --seeds 3 --workers 2   # ~2 min on 2 CPUs
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

SIGNALS = ("val_map", "best_val_map", "val_auc")


def _train(job: tuple[int, dict, list[int]]) -> tuple[int, list[dict]]:
    """One configuration with each training seed: its per-epoch signals and its test mAP."""
    import torch

    from raysearch.config import RunConfig, from_dict
    from raysearch.train import fit, prepare_training_data

    torch.set_num_threads(1)
    i, d, seeds = job
    data = prepare_training_data(from_dict(RunConfig, d, where=f"config {i}"), data_root=None)
    runs = []
    for seed in seeds:
        d["train"]["seed"] = seed
        res = fit(from_dict(RunConfig, d, where=f"config {i}"), data)
        runs.append({"curve": [{k: h[k] for k in SIGNALS} for h in res.history], "test": res.test_map})
    return i, runs


def main() -> None:
    import shutil

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--configs", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per configuration (>= 2)")
    ap.add_argument("--sample-seed", type=int, default=123, help="seed of the random configurations")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the configurations")
    ap.add_argument("--at", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8, 15], help="epochs to report")
    args = ap.parse_args()
    if args.seeds < 2:
        ap.error("--seeds must be >= 2 (the target leaves each run's own seed out)")
    out = Path(tempfile.mkdtemp(prefix="bench-rung-"))
    os.environ.setdefault("RAYSEARCH_HOME", str(out / "home"))

    import multiprocessing as mp

    import numpy as np
    from scipy.stats import spearmanr

    from bench_search import _space_file
    from raysearch.config import to_dict
    from raysearch.search.space import load_space, sample_configs

    space = load_space(_space_file(out, args.epochs, 32)).with_base(dataset=args.dataset, data_root=None)
    configs = sample_configs(space, args.configs, seed=args.sample_seed)
    seeds = [1000 + k for k in range(args.seeds)]
    _train((0, to_dict(configs[0]), seeds[:1]))  # the dataset, images and first CF fit, once, before the pool
    jobs = [(i, to_dict(c), seeds) for i, c in enumerate(configs)]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = dict(pool.imap_unordered(_train, jobs))
    runs = [results[i] for i in range(len(configs))]

    def at(curve: list[dict], signal: str, epoch: int) -> float:
        return curve[:epoch][-1][signal]  # an early-stopped run keeps its last epoch's value

    within = np.mean([np.std([r["test"] for r in rs], ddof=1) for rs in runs])
    kept = np.array([np.mean([r["test"] for r in rs]) for rs in runs])
    print(f"\n{len(runs)} random configurations of {args.dataset} x {args.seeds} training seeds, {args.epochs} epochs "
          f"(load {os.getloadavg()[0]:.1f}): test mAP across configurations sd {kept.std(ddof=1):.4f}, across one "
          f"configuration's seeds sd {within:.4f}")
    print("Spearman correlation across configurations: a run's signal at epoch E vs the configuration's test mAP "
          "on the other seeds (mean over the seeds)")
    print(f"    {'signal':<13}" + "".join(f"{'E=' + str(e):>7}" for e in args.at))
    targets = [np.array([np.mean([r["test"] for k, r in enumerate(rs) if k != s]) for rs in runs])
               for s in range(args.seeds)]
    sig = {(signal, e, s): np.array([at(rs[s]["curve"], signal, e) for rs in runs])
           for signal in SIGNALS for e in args.at for s in range(args.seeds)}

    def rho(signal: str, e: int, idx: np.ndarray) -> float:
        return float(np.mean([spearmanr(sig[(signal, e, s)][idx], targets[s][idx])[0] for s in range(args.seeds)]))

    every = np.arange(len(runs))
    for signal in SIGNALS:
        print(f"    {signal:<13}" + "".join(f"{rho(signal, e, every):>7.2f}" for e in args.at))
    # the same resampled configurations for both signals (they are correlated: same runs, same targets)
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(runs), len(runs)) for _ in range(args.boot)]
    print(f"val_auc - val_map, with a 95% CI from a paired bootstrap over the configurations ({args.boot} resamples):")
    for e in args.at:
        d = np.array([rho("val_auc", e, b) - rho("val_map", e, b) for b in boots])
        lo, hi = np.nanpercentile(d, [2.5, 97.5])
        print(f"    E={e:<3} {rho('val_auc', e, every) - rho('val_map', e, every):+.2f} [{lo:+.2f}, {hi:+.2f}]")
    shutil.rmtree(out, ignore_errors=True)  # only the generated dataset and its caches


if __name__ == "__main__":
    main()
