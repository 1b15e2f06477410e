"""``raysearch experiment``: the paired cross-validation protocol, run as Ray Tune trials.

Why this shape:

* **Paired by construction.**  The grid is (label ratio x fold x seed x variant) and the split of a
  unit depends only on (split seed, fold, training seed, ratio), never on the variant: every
  variant sees the same train/val/test items, the same label mask and the same training seed.
  Differences between variants are then paired unit by unit (and item by item).
* **K-fold over items** (:func:`raysearch.data.splits.make_fold_split`): every item is a test item
  exactly once; val is carved from the other folds; CF vectors and weights are computed per fold
  from that fold's train items only (the CF cache is keyed by the train item set), so a test item's
  interactions never reach the model that is scored on it.
* **Each variant keeps its own configuration** (alpha, lr, Omega, CF model ...): with
  ``--from-sweep`` the best trial of its own (method, weighting) group by val mAP among trials
  that finished; comparing weighting schemes at one fixed alpha would compare alphas too.
  Caveat: a sweep selects on its own split's val items, some of which are test items of a CV
  fold; the selection never sees a test *score*, but nested CV would be stricter.
* **Ray Tune as the runner**: a function trainable over a ``tune.grid_search`` of units, so they
  use the cluster (``--address``), are resumable (``Tuner.restore``) and log to W&B tagged with
  variant, weighting, fold, seed and label ratio.  Each trial sends one final report with its
  out-of-fold test scores as a checkpoint; the driver pools them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from raysearch import paths
from raysearch._io import atomic_path, write_json
from raysearch.search.results import COMPLETE
from raysearch.config import ConfigError, RunConfig, from_dict, load_run_config, to_dict

log = logging.getLogger(__name__)

REF = "image_only"
SHUFFLED = "+shuffled-cf"
DEFAULT_VARIANTS = ("image_only", "mtl:uniform", "mtl:interaction", "mtl:loss")
EXPERIMENT_FILE = "experiment.parquet"
PREDICTIONS_FILE = "predictions.npz"
META_FILE = "experiment.json"
TRIALS_DIR = "trials"


@dataclass(frozen=True)
class Variant:
    """One compared arm: ``method[:weighting]``, or the shuffled-CF control of another arm."""

    name: str
    method: str
    weighting: str
    shuffled_from: str | None = None


def parse_variants(specs: Sequence[str], shuffle_control: bool = False) -> list[Variant]:
    """``["image_only", "mtl:loss", ...]`` -> variants (Image-only first: it is the reference).

    ``--shuffle-control`` adds ``<first mtl/sequential variant>+shuffled-cf``: the same
    configuration with CF targets permuted across items (the negative control).
    """
    from raysearch.cf.weights import WEIGHTINGS
    from raysearch.train.methods import METHODS

    out: list[Variant] = []
    for raw in specs:
        spec = raw.strip()
        if not spec:
            continue
        method, _, weighting = spec.partition(":")
        METHODS.get(method)  # unknown names: one-line error listing the choices
        if METHODS.get(method).uses_cf and method in ("mtl", "sequential"):
            weighting = weighting or "uniform"
            WEIGHTINGS.get(weighting)
            name = f"{method}:{weighting}"
        else:
            if weighting:
                raise ConfigError(f"--variants {spec!r}: {method} takes no weighting scheme")
            weighting, name = "uniform", method
        if any(v.name == name for v in out):
            raise ConfigError(f"--variants lists {name!r} twice")
        out.append(Variant(name, method, weighting))
    if not any(v.name == REF for v in out):
        out.insert(0, Variant(REF, REF, "uniform"))
    out.sort(key=lambda v: v.name != REF)
    if shuffle_control:
        base = next((v for v in out if v.method in ("mtl", "sequential")), None)
        if base is None:
            raise ConfigError("--shuffle-control needs an mtl or sequential variant to shuffle")
        out.append(Variant(base.name + SHUFFLED, base.method, base.weighting, shuffled_from=base.name))
    return out


@dataclass(frozen=True)
class ExperimentConfig:
    dataset: str = "synthetic"
    data_root: str | None = None
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    seeds: int = 3
    folds: int = 5
    label_ratios: tuple[float, ...] = (1.0,)
    shuffle_control: bool = False
    from_sweep: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()          # FILE (every variant) or VARIANT=FILE
    epochs: int | None = None              # override every variant's train.epochs
    out: str | None = None
    resume: bool = False
    report_only: bool = False              # with resume: write the outputs from the units finished so far, run none
    address: str | None = None
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    split_seed: int = 0
    val: float = 0.15
    n_boot: int = 1000
    wandb: bool = True
    wandb_project: str = "raysearch"
    cf_tables: bool = True

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")
        if self.folds < 2:
            raise ConfigError(f"--folds must be >= 2, got {self.folds}")
        if not self.label_ratios or any(not 0 < r <= 1 for r in self.label_ratios):
            raise ConfigError(f"--label-ratios must be in (0, 1], got {list(self.label_ratios)}")
        if self.from_sweep and self.configs:
            raise ConfigError("give either --from-sweep or --config, not both")
        if not 0 < self.val < 1:
            raise ConfigError(f"--val must be in (0, 1), got {self.val}")
        if self.cpus_per_trial <= 0 or (self.max_concurrent is not None and self.max_concurrent < 1):
            raise ConfigError("--cpus-per-trial must be > 0 and --max-concurrent >= 1")
        if self.n_boot < 100:
            raise ConfigError(f"--n-boot must be >= 100, got {self.n_boot}")


# ------------------------------------------------------------------------------ configurations

def best_from_sweeps(run_dirs: Sequence[str], variant: Variant) -> tuple[RunConfig, str]:
    """Best *finished* trial of the variant's own (method, weighting) group by val mAP."""
    from raysearch.search.results import best_row, best_run_config, load_results

    frames = []
    for d in run_dirs:
        df = load_results(d)
        df["_sweep"] = str(d)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    g = df[(df["method"] == variant.method) & df["stop_reason"].isin(COMPLETE)]
    if variant.method in ("mtl", "sequential"):
        g = g[g["weighting"] == variant.weighting]
    row = best_row(g)
    if row is None:
        raise ConfigError(f"--from-sweep {', '.join(run_dirs)}: no finished trial of {variant.method}"
                          + (f" with weighting {variant.weighting}" if variant.method in ("mtl", "sequential") else "")
                          + f" for variant {variant.name!r}; sweep it (raysearch tune --method {variant.method}) or drop it")
    return best_run_config(row), f"{row['_sweep']} trial {row['trial_id']} (val mAP {row['best_val_map']:.4f})"


def resolve_configs(cfg: ExperimentConfig, variants: Sequence[Variant]) -> tuple[dict[str, RunConfig], dict[str, str]]:
    """Each variant's RunConfig and where it came from (sweep trial, file, or the space's base)."""
    from raysearch.search.space import default_space_path, load_space

    runs: dict[str, RunConfig] = {}
    source: dict[str, str] = {}
    per_variant: dict[str, str] = {}
    common: str | None = None
    names = {v.name for v in variants}
    for c in cfg.configs:
        if "=" in c:
            v, _, f = c.partition("=")
            if v not in names:
                raise ConfigError(f"--config {c!r}: {v!r} is not one of the variants {sorted(names)}")
            per_variant[v] = f
        elif common is not None:
            raise ConfigError("--config FILE may be given once (for every variant); use VARIANT=FILE for the others")
        else:
            common = c
    space_path = default_space_path(cfg.dataset)
    for v in variants:
        if v.shuffled_from:
            continue
        if cfg.from_sweep:
            run, src = best_from_sweeps(cfg.from_sweep, v)
        elif v.name in per_variant or common:
            f = per_variant.get(v.name, common)
            run, src = load_run_config(f), str(f)
        else:
            run, src = load_space(space_path).base, f"{space_path} (base)"
        train = dataclasses.replace(run.train, method=v.method, weighting=v.weighting,
                                    **({"epochs": cfg.epochs} if cfg.epochs else {}))
        runs[v.name] = dataclasses.replace(run, dataset=cfg.dataset, data_root=cfg.data_root, train=train)
        source[v.name] = src
    for v in variants:
        if v.shuffled_from:
            runs[v.name], source[v.name] = runs[v.shuffled_from], f"{v.shuffled_from}, CF targets shuffled across items"
    return runs, source


# ------------------------------------------------------------------------------ the trial

@dataclass(frozen=True)
class ExperimentContext:
    """What every trial needs besides its grid point (sent once via ``tune.with_parameters``)."""

    runs: dict[str, dict[str, Any]]
    variants: dict[str, Variant]
    folds: int
    split_seed: int
    val: float
    cpus_per_trial: float
    lock_dir: str
    wandb: Any = None  # raysearch.search.tracking.WandbSettings


def unit_run(ctx: ExperimentContext, variant: str, seed: int, label_ratio: float) -> RunConfig:
    run = from_dict(RunConfig, ctx.runs[variant], where=f"variant {variant}")
    return dataclasses.replace(
        run, split=dataclasses.replace(run.split, seed=ctx.split_seed, label_ratio=float(label_ratio)),
        train=dataclasses.replace(run.train, seed=int(seed)))


def unit_split(ds: Any, ctx: ExperimentContext, fold: int, seed: int, label_ratio: float):
    """The unit's split: a function of (split seed, fold, training seed, ratio), never of the variant."""
    from raysearch.data.splits import make_fold_split

    return make_fold_split(ds, ctx.folds, int(fold), seed=ctx.split_seed, val=ctx.val,
                           label_ratio=float(label_ratio), label_seed=int(seed))


def unit_data(ctx: ExperimentContext, variant: str, fold: int, seed: int, label_ratio: float):
    """(RunConfig, TrainingData) of one unit; the shuffled control permutes the CF targets."""
    from filelock import FileLock

    from raysearch.data.registry import load_dataset
    from raysearch.train import prepare_training_data, shuffle_cf

    run = unit_run(ctx, variant, seed, label_ratio)
    ds = load_dataset(run.dataset, run.data_root)
    split = unit_split(ds, ctx, fold, seed, label_ratio)
    # one CF preparation per fold at a time: concurrent trials of one fold wait for the CF vectors
    # the first one computes (then read its cache) instead of fitting them twice; image_only needs
    # no CF and never waits
    from raysearch.train.methods import METHODS

    lock = FileLock(os.path.join(ctx.lock_dir, f"fold{int(fold)}.lock")) if METHODS.get(run.train.method).uses_cf else None
    with lock if lock is not None else contextlib.nullcontext():
        data = prepare_training_data(run, data_root=run.data_root, split=split)
    if ctx.variants[variant].shuffled_from:
        data = shuffle_cf(data, seed=10_000 + 100 * int(fold) + int(seed))
    return run, data


def experiment_trial(config: dict[str, Any], ctx: ExperimentContext) -> None:
    """Tune function trainable: one (variant, fold, seed, label ratio) unit -> fit -> test scores."""
    import torch
    from ray import tune

    from raysearch.metrics import per_class_ap
    from raysearch.search.tracking import TrialTracker
    from raysearch.train import fit

    torch.set_num_threads(max(1, int(ctx.cpus_per_trial)))
    u = config["unit"]
    variant, fold, seed, ratio = u["variant"], int(u["fold"]), int(u["seed"]), float(u["label_ratio"])
    t0 = time.perf_counter()
    run, data = unit_data(ctx, variant, fold, seed, ratio)
    data_s = time.perf_counter() - t0
    tc = tune.get_context()
    tracker = TrialTracker(ctx.wandb, run, f"{variant}-f{fold}-s{seed}-r{ratio:g}", tc.get_trial_id(), params=config)
    if tracker.run is not None:
        v = ctx.variants[variant]
        tracker.run.tags = tuple(tracker.run.tags) + (f"variant:{variant}", f"fold:{fold}", f"seed:{seed}",
                                                      f"label_ratio:{ratio:g}", *(("shuffled-cf",) if v.shuffled_from else ()))
        tracker.run.config.update({"experiment.variant": variant, "experiment.fold": fold,
                                   "experiment.seed": seed, "experiment.label_ratio": ratio}, allow_val_change=True)
    reason = "error"
    final: dict[str, Any] = {}
    try:
        res = fit(run, data, callback=tracker.log_epoch)
        test = data.split.test
        ap = per_class_ap(data.labels[test], res.test_scores)
        final = {"test_map": float(res.test_map), "val_map": float(res.best_val_map), "epochs_run": int(res.epochs_run),
                 "best_epoch": int(res.best_epoch), "stop_reason": res.stop_reason, "train_time_s": float(res.train_time_s),
                 "data_s": data_s, "n_test": int(len(test)), "n_train_labelled": int(len(data.split.train_labelled))}
        reason = res.stop_reason
        with tempfile.TemporaryDirectory(prefix="raysearch-exp-") as tmp:
            np.savez(os.path.join(tmp, "preds.npz"), items=test.astype(np.int64),
                     scores=np.asarray(res.test_scores, dtype=np.float32), per_class_ap=ap)
            tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
    finally:
        tracker.finish(final, reason)


# ------------------------------------------------------------------------------ the run

@dataclass
class ExperimentResult:
    out_dir: Path
    units: pd.DataFrame
    summary: pd.DataFrame
    files: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    missing: int = 0


def _out_dir(cfg: ExperimentConfig) -> Path:
    if cfg.out:
        return Path(cfg.out).expanduser().resolve()
    return paths.runs_dir(cfg.data_root) / f"experiment-{Path(cfg.dataset).name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_experiment(cfg: ExperimentConfig, verbose: int = 0) -> ExperimentResult:
    """Run (or ``resume``) the grid of units, then write every output (see :mod:`.report`)."""
    from raysearch.data.registry import load_dataset
    from raysearch.experiment.report import write_outputs
    from raysearch.search.cluster import init_ray

    t0 = time.perf_counter()
    out = _out_dir(cfg)
    meta = _saved_meta(out) if cfg.resume else None
    if meta is not None:
        cfg = dataclasses.replace(ExperimentConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                      for k, v in meta["config"].items()}),
                                  resume=True, address=cfg.address, report_only=cfg.report_only,
                                  cf_tables=cfg.cf_tables and meta["config"].get("cf_tables", True))
    variants = parse_variants(cfg.variants, cfg.shuffle_control)
    ds = load_dataset(cfg.dataset, cfg.data_root)  # a missing dataset: one error here, not N failed trials
    if ds.n_items < cfg.folds * 2:
        raise ConfigError(f"--folds {cfg.folds} is too many for {ds.n_items} items of {ds.name!r}")
    if meta is not None:
        runs = {k: from_dict(RunConfig, v, where=f"{out / META_FILE} runs.{k}") for k, v in meta["runs"].items()}
        source = meta["source"]
    else:
        runs, source = resolve_configs(cfg, variants)
    init_ray(cfg.address)
    _check_trials_dir(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "locks").mkdir(exist_ok=True)
    seeds = list(range(cfg.seeds))
    if meta is None:
        write_json(out / META_FILE, {
            "config": dataclasses.asdict(cfg), "variants": [dataclasses.asdict(v) for v in variants],
            "runs": {k: to_dict(v) for k, v in runs.items()}, "source": source, "seeds": seeds,
            "dataset_fingerprint": ds.fingerprint,
        })
    tuner = _experiment_tuner(cfg, out, variants, runs, seeds, verbose)
    # report_only: the units finished so far (the others are "not_run"); paired statistics use
    # only units every variant finished, so a partial run is summarised honestly, not padded
    results = tuner.get_results() if cfg.report_only else tuner.fit()
    units, preds = collect(results, variants, runs, ds.n_items)
    with atomic_path(out / EXPERIMENT_FILE) as tmp:
        units.to_parquet(tmp, index=False)
    with atomic_path(out / PREDICTIONS_FILE) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **preds, y_true=ds.label_matrix.astype(np.int8), label_names=np.array(ds.label_names))
    summary, files = write_outputs(out, cfg, variants, runs, source, units, ds)
    expected = len(variants) * cfg.folds * cfg.seeds * len(cfg.label_ratios)
    missing = expected - int((~units["stop_reason"].isin(["error", "not_run"])).sum())
    return ExperimentResult(out, units, summary, files, time.perf_counter() - t0, missing)


def _saved_meta(out: Path) -> dict[str, Any]:
    meta_path = out / META_FILE
    if not meta_path.is_file():
        raise ConfigError(f"--resume: no experiment at {out} (no {META_FILE}); give the --out of the run to continue")
    return json.loads(meta_path.read_text())


def _check_trials_dir(cfg: ExperimentConfig, out: Path) -> None:
    from ray import tune

    trials_path = out / TRIALS_DIR
    if cfg.resume:
        if not tune.Tuner.can_restore(str(trials_path)):
            raise ConfigError(f"--resume: no restorable trials at {trials_path}")
    elif trials_path.exists():
        raise ConfigError(f"{out} already holds an experiment; use --resume to continue it or another --out")


def _experiment_tuner(cfg: ExperimentConfig, out: Path, variants: list[Variant], runs: dict[str, RunConfig],
                      seeds: list[int], verbose: int) -> Any:
    """The units as one Tune grid (new), or the interrupted one (``resume``)."""
    import ray
    from ray import tune

    from raysearch.search.tracking import WandbSettings, wandb_mode

    mode = wandb_mode() if cfg.wandb else "disabled"
    ctx = ExperimentContext(
        runs={k: to_dict(v) for k, v in runs.items()}, variants={v.name: v for v in variants}, folds=cfg.folds,
        split_seed=cfg.split_seed, val=cfg.val, cpus_per_trial=cfg.cpus_per_trial, lock_dir=str(out / "locks"),
        wandb=WandbSettings(enabled=cfg.wandb, project=cfg.wandb_project, group=out.name, dir=str(out), mode=mode),
    )
    trainable = tune.with_resources(tune.with_parameters(experiment_trial, ctx=ctx), {"cpu": cfg.cpus_per_trial})
    if cfg.resume:
        return tune.Tuner.restore(str(out / TRIALS_DIR), trainable=trainable, resume_errored=True)
    # a local Ray may hold extra logical CPUs for the sweep's data owner: size by the real cores
    n_cpu = ray.cluster_resources().get("CPU", 1) if cfg.address else float(os.cpu_count() or 1)
    if cfg.cpus_per_trial > n_cpu and cfg.address is None:
        raise ConfigError(f"--cpus-per-trial {cfg.cpus_per_trial:g} > {n_cpu:g} CPUs: no trial could run")
    # one grid axis of units, in the order they should finish: fold slowest, variant fastest,
    # so an interrupted run (or --report-only) holds complete paired units for every ratio
    units_grid = [{"fold": f, "seed": s, "label_ratio": float(r), "variant": v.name}
                  for f in range(cfg.folds) for s in seeds for r in cfg.label_ratios for v in variants]
    return tune.Tuner(
        trainable, param_space={"unit": tune.grid_search(units_grid)},
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True,
                                    max_concurrent_trials=cfg.max_concurrent or max(1, int(n_cpu // cfg.cpus_per_trial))),
        run_config=tune.RunConfig(name=TRIALS_DIR, storage_path=str(out), verbose=verbose,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )


def pred_key(ratio: float, variant: str, seed: int) -> str:
    return f"r{ratio:g}|{variant}|s{seed}"


def collect(results: Any, variants: Sequence[Variant], runs: dict[str, RunConfig], n_items: int
            ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One row per unit (errors included) + pooled out-of-fold scores per (ratio, variant, seed)."""
    rows, parts = [], {}
    by_name = {v.name: v for v in variants}
    for r in results:
        c = (r.config or {}).get("unit", r.config or {})  # (runs before the single unit axis: flat keys)
        m = dict(r.metrics or {})
        v = by_name.get(c.get("variant"))
        if v is None:
            continue
        ratio, fold, seed = float(c["label_ratio"]), int(c["fold"]), int(c["seed"])
        row = {"variant": v.name, "method": v.method, "weighting": v.weighting if v.method in ("mtl", "sequential") else None,
               "shuffled_cf": v.shuffled_from is not None, "label_ratio": ratio, "fold": fold, "seed": seed,
               "test_map": float(m.get("test_map", np.nan)), "val_map": float(m.get("val_map", np.nan)),
               "epochs_run": int(m.get("epochs_run", 0) or 0), "best_epoch": int(m.get("best_epoch", 0) or 0),
               "stop_reason": (str(m.get("stop_reason", "error")) if r.error is None and r.checkpoint
                               else "error" if r.error is not None else "not_run"),
               "train_time_s": float(m.get("train_time_s", np.nan)), "n_test": int(m.get("n_test", 0) or 0),
               "n_train_labelled": int(m.get("n_train_labelled", 0) or 0), "per_class_ap": None,
               "error": None if r.error is None else str(r.error).strip().splitlines()[-1][:300],
               "config": json.dumps(to_dict(runs[v.name]))}
        if r.checkpoint is not None and r.error is None:
            with r.checkpoint.as_directory() as d:
                z = np.load(os.path.join(d, "preds.npz"))
                row["per_class_ap"] = [float(x) for x in z["per_class_ap"]]
                parts.setdefault(pred_key(ratio, v.name, seed), []).append((z["items"], z["scores"]))
        rows.append(row)
    units = pd.DataFrame(rows).sort_values(["label_ratio", "variant", "fold", "seed"], kind="stable", ignore_index=True)
    preds = {}
    for k, chunks in parts.items():
        full = np.full((n_items, chunks[0][1].shape[1]), np.nan, dtype=np.float32)
        for items, scores in chunks:
            full[items] = scores
        preds[k] = full  # NaN rows: items of a fold whose trial failed
    return units, preds
