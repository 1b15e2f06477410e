"""``raysearch experiment``: the paired cross-validation protocol, on the sweep's own engine.

Why this shape:

* **Paired by construction.**  A unit is (label ratio, fold, seed); its split depends only on
  (split seed, fold, training seed, ratio), never on the variant (``SplitConfig.folds/fold/
  label_seed``): every variant sees the same train/val/test items, label mask and training seed.
* **K-fold over items** (:func:`raysearch.data.splits.make_fold_split`): every item is a test item
  exactly once; val is carved from the other folds; CF vectors and weights are computed per fold
  from that fold's train items only, so a test item's interactions never reach the model scored on it.
* **One trial engine.**  A unit is a ``RunConfig`` like any sweep trial's, run by the sweep's
  trainable (:func:`raysearch.search.trainables.trial_fn`) with the sweep's data owner (each fold's
  CF vectors and weights computed once, shared as object refs), per-epoch checkpoints,
  ``--max-failures`` retries, resources (``--cpus/--gpus/--workers-per-trial``: DDP via
  ``TorchTrainer``), driver-side W&B and stop reasons.  The sweep is an Optuna-sampled space over
  that trainable; the experiment is a grid of units over it (:class:`UnitGrid`).
* **Nested tuning** (``--tune N``): in each outer fold every tuned variant gets its own inner
  sweep (TPE + ASHA, the sweep engine) of N trials on that fold's train/val items only
  (``split.inner``: the test fold is in no role), the same budget for every variant; the chosen
  configuration is then trained with each seed and tested on the outer fold.  The searches run
  one after another, with head starts that change no result: one background owner fits each
  fold's CF model into the on-disk cache ahead of the searches (one fit per fold serves its inner
  searches and its units), every search runs on one warm data owner (no owner start-up per
  search), and each search's tail asks it for the next search's data.  Without it, each
  variant runs at a given configuration (``--config`` / ``--from-sweep``), which compares
  configurations as much as variants; ``--same-config V`` runs every weighting of V's method at
  V's configuration (the arms then differ in the weighting only).
* **Controls**: ``--shuffle-control first|all`` adds, per mtl/sequential arm, the same arm with CF
  targets permuted across items (``train.shuffle_cf``): a gain that survives it is not CF's.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from raysearch import paths
from raysearch._io import atomic_path, write_json
from raysearch.choices import SHUFFLE_CONTROLS
from raysearch.config import (ConfigError, RunConfig, SplitConfig, check_choice, check_number, contradictions, from_dict,
                              load_run_config, to_dict)
from raysearch.registry import UnknownNameError
from raysearch.search.results import COMPLETE, StopReason

log = logging.getLogger(__name__)

REF = "image_only"
SHUFFLED = "+shuffled-cf"
DEFAULT_VARIANTS = ("image_only", "mtl:uniform", "mtl:interaction", "mtl:loss")
EXPERIMENT_FILE = "experiment.parquet"
PREDICTIONS_FILE = "predictions.npz"
META_FILE = "experiment.json"
TUNING_FILE = "tuning.parquet"
TRIALS_DIR = "trials"
TUNING_DIR = "tuning"


@dataclass(frozen=True)
class Variant:
    """One compared arm: ``method[:weighting]``, or the shuffled-CF control of another arm."""

    name: str
    method: str
    weighting: str
    shuffled_from: str | None = None


def _weighted(method: str) -> bool:
    from raysearch.train.methods import METHODS

    m = METHODS.get(method)
    return bool(m.uses_cf and m.weighted)


def _weighted_methods() -> list[str]:
    from raysearch.train.methods import METHODS

    return [m for m in METHODS.names() if _weighted(m)]


def parse_variants(specs: Sequence[str], shuffle_control: str | bool = "none") -> list[Variant]:
    """``["image_only", "mtl:loss", ...]`` -> variants (Image-only first: it is the reference).

    ``shuffle_control``: ``first`` adds ``<first mtl/sequential variant>+shuffled-cf`` (the same
    configuration with CF targets permuted across items), ``all`` one such arm per mtl/sequential variant.
    """
    from raysearch.cf.weights import WEIGHTINGS
    from raysearch.train.methods import METHODS

    control = SHUFFLE_CONTROLS.get({True: "first", False: "none"}.get(shuffle_control, shuffle_control))  # type: ignore[arg-type]
    out: list[Variant] = []
    for raw in specs:
        spec = raw.strip()
        if not spec:
            continue
        method, _, weighting = spec.partition(":")
        try:  # unknown names: one-line error naming the option and listing the choices
            METHODS.get(method)
            if _weighted(method):
                weighting = weighting or "uniform"
                WEIGHTINGS.get(weighting)
        except UnknownNameError as e:
            raise ConfigError(f"--variants {spec!r}: {e}") from None
        if _weighted(method):
            name = f"{method}:{weighting}"
        else:
            if weighting:
                raise ConfigError(f"--variants {spec!r}: {method} takes no weighting scheme")
            weighting, name = "uniform", method
        if any(v.name == name for v in out):
            raise ConfigError(f"--variants lists {name!r} twice")
        out.append(Variant(name, method, weighting))
    if not any(v.name != REF for v in out):  # image_only alone compares nothing: say so, do not run it
        raise ConfigError(f"--variants {','.join(specs)!r} lists no arm to compare with {REF}; "
                          f"give e.g. {','.join(DEFAULT_VARIANTS)}")
    if not any(v.name == REF for v in out):
        out.insert(0, Variant(REF, REF, "uniform"))
    out.sort(key=lambda v: v.name != REF)
    bases = [v for v in out if _weighted(v.method)]
    if control.adds_arms and not bases:
        raise ConfigError(f"--shuffle-control {control.name} needs a CF-weighted variant to shuffle "
                          f"({', '.join(_weighted_methods())})")
    for base in control.arms(bases):
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
    shuffle_control: str = "none"          # raysearch.choices.SHUFFLE_CONTROLS: none | first | all
    same_config: str | None = None         # every weighting of this variant's method runs at its configuration
    tune: int = 0                          # nested tuning: inner TPE+ASHA trials per (ratio, fold, tuned variant)
    tune_space: str | None = None          # the inner searches' space (default: the dataset's)
    from_sweep: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()          # FILE (every variant) or VARIANT=FILE
    epochs: int | None = None              # override every variant's train.epochs
    out: str | None = None
    resume: bool = False
    report_only: bool = False              # with resume: write the outputs from the units finished so far, run none
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    max_failures: int = 2
    checkpoint_every: int = 1
    keep_models: bool = False              # keep each unit's model.pt (default: its report and test scores only)
    max_concurrent: int | None = None
    split_seed: int = 0
    val: float = 0.15
    n_boot: int = 1000
    wandb: bool = True
    wandb_project: str = "raysearch"
    cf_tables: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.shuffle_control, bool):  # the old flag: --shuffle-control meant the first arm
            object.__setattr__(self, "shuffle_control", "first" if self.shuffle_control else "none")
        check_choice(SHUFFLE_CONTROLS, self.shuffle_control, "--shuffle-control")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")
        if self.folds < 2:
            raise ConfigError(f"--folds must be >= 2, got {self.folds}")
        if not self.label_ratios or any(not 0 < r <= 1 for r in self.label_ratios):
            raise ConfigError(f"--label-ratios must be in (0, 1], got {list(self.label_ratios)}")
        if self.from_sweep and self.configs:
            raise ConfigError("give either --from-sweep or --config, not both")
        if self.tune < 0:
            raise ConfigError(f"--tune must be >= 0 (0: no nested tuning), got {self.tune}")
        if self.tune and self.from_sweep:
            raise ConfigError("--tune chooses each fold's configuration itself; --from-sweep would be ignored: give one")
        if not 0 < self.val < 1:
            raise ConfigError(f"--val must be in (0, 1), got {self.val}")
        if self.epochs is not None:  # 0 would silently keep each variant's own epochs
            check_number(self.epochs, "--epochs", low=1)
        check_number(self.cpus_per_trial, "--cpus-per-trial", low=0, low_open=True)
        check_number(self.gpus_per_trial, "--gpus-per-trial", low=0)
        check_number(self.workers_per_trial, "--workers-per-trial", low=1)
        if self.max_concurrent is not None:
            check_number(self.max_concurrent, "--max-concurrent", low=1)
        check_number(self.max_failures, "--max-failures", low=0)
        check_number(self.checkpoint_every, "--checkpoint-every", low=0)
        if self.n_boot < 100:
            raise ConfigError(f"--n-boot must be >= 100, got {self.n_boot}")

    @property
    def distributed(self) -> bool:
        return self.workers_per_trial > 1 or self.gpus_per_trial > 0


# ------------------------------------------------------------------------------ configurations

def best_from_sweeps(run_dirs: Sequence[str], variant: Variant) -> tuple[RunConfig, str]:
    """Best *finished* trial of the variant's own (method, weighting) group by val mAP (each run dir a
    local path or a URI: :mod:`raysearch.runs`)."""
    from raysearch.runs import best_row, best_run_config, load_results

    frames = []
    for d in run_dirs:
        df = load_results(d)
        df["_sweep"] = str(d)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    g = df[(df["method"] == variant.method) & df["stop_reason"].isin(COMPLETE)]
    weighted = _weighted(variant.method)
    if weighted:
        g = g[g["weighting"] == variant.weighting]
    row = best_row(g)
    if row is None:
        raise ConfigError(f"--from-sweep {', '.join(run_dirs)}: no finished trial of {variant.method}"
                          + (f" with weighting {variant.weighting}" if weighted else "")
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
        if cfg.tune and not (v.name in per_variant or common):
            run, src = load_space(cfg.tune_space or space_path).base, f"{cfg.tune_space or space_path} (base; searched per fold)"
        elif cfg.from_sweep:
            run, src = best_from_sweeps(cfg.from_sweep, v)
        elif v.name in per_variant or common:
            f = per_variant.get(v.name, common)
            run, src = load_run_config(f), str(f)
        else:
            run, src = load_space(space_path).base, f"{space_path} (base)"
        train = dataclasses.replace(run.train, method=v.method, weighting=v.weighting, shuffle_cf=False,
                                    **({"epochs": cfg.epochs} if cfg.epochs else {}))
        runs[v.name] = dataclasses.replace(run, dataset=cfg.dataset, data_root=cfg.data_root, train=train)
        source[v.name] = src
    if cfg.same_config:
        owner = next((v for v in variants if v.name == cfg.same_config and not v.shuffled_from), None)
        if owner is None:
            raise ConfigError(f"--same-config {cfg.same_config!r} is not one of the variants "
                              f"{[v.name for v in variants if not v.shuffled_from]}")
        for v in variants:
            if config_owner(cfg, v, variants) == owner.name and v.name != owner.name and not v.shuffled_from:
                runs[v.name] = arm_run(runs[owner.name], v)
                source[v.name] = f"{owner.name}'s configuration ({source[owner.name]}), weighting {v.weighting}"
    for v in variants:
        if v.shuffled_from:
            runs[v.name] = arm_run(runs[v.shuffled_from], v)
            source[v.name] = f"{v.shuffled_from}, CF targets shuffled across items"
    return runs, source


def config_owner(cfg: ExperimentConfig, v: Variant, variants: Sequence[Variant]) -> str:
    """Whose configuration the arm runs at: a shuffled arm its source's, an arm of ``--same-config``'s
    method the named variant's, any other its own (the variants that get an inner search)."""
    if v.shuffled_from:
        return config_owner(cfg, next(x for x in variants if x.name == v.shuffled_from), variants)
    if cfg.same_config:
        ref = next((x for x in variants if x.name == cfg.same_config), None)
        if ref is not None and v.method == ref.method:
            return ref.name
    return v.name


def arm_run(run: RunConfig, v: Variant) -> RunConfig:
    """``run`` as arm ``v``: only the method, the weighting and the CF shuffle change."""
    return dataclasses.replace(run, train=dataclasses.replace(run.train, method=v.method, weighting=v.weighting,
                                                              shuffle_cf=v.shuffled_from is not None))


# ------------------------------------------------------------------------------ units

def fold_split(cfg: ExperimentConfig, fold: int, seed: int, ratio: float, inner: bool = False) -> SplitConfig:
    """The split of unit (fold, seed, ratio) as config: a function of those and the split seed only."""
    rest = (1 - cfg.val) / 2  # train/test fractions are unused with folds; they must only sum to 1
    return SplitConfig(seed=cfg.split_seed, train=rest, val=cfg.val, test=1 - cfg.val - rest, label_ratio=float(ratio),
                       folds=cfg.folds, fold=int(fold), label_seed=int(seed), inner=inner)


def unit_run(cfg: ExperimentConfig, run: RunConfig, fold: int, seed: int, ratio: float) -> RunConfig:
    """The arm's configuration on one unit: its split (fold, label mask), its training seed and the
    torch thread count its trial trains with (recorded, as a sweep's trials record it, so a unit
    retrains exactly)."""
    from raysearch.search.trainables import trial_settings, with_trial_threads

    run = with_trial_threads(run, trial_settings(cfg))
    return dataclasses.replace(run, split=fold_split(cfg, fold, seed, ratio), train=dataclasses.replace(run.train, seed=int(seed)))


@dataclass(frozen=True)
class UnitGrid:
    """The experiment's "search space" for the sweep trainable: a trial's config holds its unit,
    whose ``run`` is the whole RunConfig (the grid, not a sampler, decides it)."""

    path: str = "experiment units"
    base: RunConfig = field(default_factory=RunConfig)
    names: tuple[str, ...] = ("unit",)

    def apply(self, values: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
        u = values["unit"]
        return from_dict(RunConfig, u["run"], where=f"unit {u.get('variant')} fold {u.get('fold')} seed {u.get('seed')}")

    def wandb_tags(self, config: dict[str, Any]) -> list[str]:
        u = config.get("unit", {})
        return [f"variant:{u.get('variant')}", f"fold:{u.get('fold')}", f"seed:{u.get('seed')}",
                f"label_ratio:{u.get('label_ratio')}", *(("shuffled-cf",) if u.get("shuffled") else ())]


def unit_counts(cfg: ExperimentConfig, variants: Sequence[Variant], units: pd.DataFrame) -> tuple[int, int]:
    """(finished, planned) units: the run's exit status and a partial summary's first line."""
    planned = len(variants) * cfg.folds * cfg.seeds * len(cfg.label_ratios)
    return int(units["stop_reason"].isin(COMPLETE).sum()), planned


def units_grid(cfg: ExperimentConfig, variants: Sequence[Variant], run_of: Any) -> list[dict[str, Any]]:
    """Every unit, in the order they should finish: fold slowest, variant fastest, so an
    interrupted run (or ``--report-only``) holds complete paired units.  ``run_of(ratio, fold, v)``
    is the arm's configuration there (tuned per fold, or fixed)."""
    return [{"fold": f, "seed": s, "label_ratio": float(r), "variant": v.name, "shuffled": v.shuffled_from is not None,
             "run": to_dict(unit_run(cfg, run_of(float(r), f, v), f, s, float(r)))}
            for f in range(cfg.folds) for s in range(cfg.seeds) for r in cfg.label_ratios for v in variants]


# ------------------------------------------------------------------------------ nested tuning

def tune_key(ratio: float, fold: int, variant: str) -> str:
    return f"r{ratio:g}-f{fold}-{variant.replace(':', '-')}"


def inner_space(cfg: ExperimentConfig, run: RunConfig, v: Variant, ratio: float, fold: int) -> Any:
    """The dataset's space over this arm on the fold's train/val items: its base is the arm's
    configuration with the inner split; method and weighting are pinned (they are the arm)."""
    from raysearch.search.space import default_space_path, load_space

    space = load_space(cfg.tune_space or default_space_path(cfg.dataset)).with_method(v.method)
    params = tuple(p for p in space.params if p.name != "train.weighting")
    params = tuple(dataclasses.replace(p, when=tuple((c, vals) for c, vals in p.when if c != "train.weighting"))
                   for p in params if all(v.weighting in vals for c, vals in p.when if c == "train.weighting"))
    base = dataclasses.replace(run, split=fold_split(cfg, fold, 0, ratio, inner=True))
    return dataclasses.replace(space, base=base, params=params)


def run_tuning(cfg: ExperimentConfig, out: Path, variants: Sequence[Variant], runs: dict[str, RunConfig],
               done: dict[str, Any], save: Any, prefit: Any = None) -> dict[str, Any]:
    """One inner sweep per (ratio, fold, tuned variant), each ``cfg.tune`` trials of TPE + ASHA.

    ``done`` holds the finished ones (resume); an inner sweep interrupted half-way is run again
    from scratch (its trials are cheap next to getting its bookkeeping right).  ``save(done)``
    records each as it finishes.  The searches run one after another on one data owner, started
    here and stopped at the end (``run_sweep(owner=...)``): it imports torch and Cornac and maps
    the images once, not once per search, and keeps each search's small per-configuration parts.
    Each search's tail (every trial started, a slot free) asks it for the next search's data
    (:class:`NextData`).  ``prefit`` (:func:`start_cf_prefit`): a search that needs a CF model
    first waits for its fit there, so no fold's model is fitted twice at once."""
    from raysearch.search.results import best_row, best_run_config
    from raysearch.search.shared import SHARED_ACTOR_PREFIX, start_shared_actor
    from raysearch.search.tune import SweepConfig, run_sweep

    tuned = [v for v in variants if config_owner(cfg, v, variants) == v.name]
    storage = out / TUNING_DIR
    jobs = [(float(ratio), fold, v) for ratio in cfg.label_ratios for fold in range(cfg.folds) for v in tuned
            if tune_key(ratio, fold, v.name) not in done]
    if not jobs:
        return done
    owner_name = f"{SHARED_ACTOR_PREFIX}experiment-tune-{out.name}-{os.getpid()}"
    # started before the first search and pinned to this (the driver's) node, as a sweep's own owner;
    # the handle held here keeps it alive between searches
    owner = start_shared_actor(owner_name)
    try:
        for i, (ratio, fold, v) in enumerate(jobs):
            key = tune_key(ratio, fold, v.name)
            shutil.rmtree(storage / key, ignore_errors=True)
            space = inner_space(cfg, runs[v.name], v, ratio, fold)
            nxt = None
            if i + 1 < len(jobs):
                r2, f2, v2 = jobs[i + 1]
                base2 = inner_space(cfg, runs[v2.name], v2, r2, f2).base
                nxt = next_data(cfg.tune, base2, ask=functools.partial(_ask, owner),
                                ready=functools.partial(cf_ready, cfg, base2))
            t0 = time.perf_counter()
            if prefit is not None:
                prefit.wait(cfg, space.base)
            res = run_sweep(SweepConfig(
                dataset=cfg.dataset, data_root=cfg.data_root, trials=cfg.tune, storage=str(storage), name=key,
                address=cfg.address, cpus_per_trial=cfg.cpus_per_trial, gpus_per_trial=cfg.gpus_per_trial,
                workers_per_trial=cfg.workers_per_trial, max_concurrent=cfg.max_concurrent,
                max_failures=cfg.max_failures, checkpoint_every=cfg.checkpoint_every, seed=1000 * fold + 7,
                wandb=False), space=space, progress=False, callbacks=[nxt] if nxt is not None else (),
                owner=owner_name)
            row = best_row(res.results)
            if row is None:
                raise ConfigError(f"nested tuning {key}: no inner trial finished ({out / TUNING_DIR / key}); "
                                  "see its results.parquet")
            chosen = best_run_config(row)
            done[key] = {"ratio": float(ratio), "fold": fold, "variant": v.name, "run": to_dict(chosen),
                         "inner_val_map": float(row["best_val_map"]), "trial_id": str(row["trial_id"]),
                         "trials": int(len(res.results)), "wall_s": round(time.perf_counter() - t0, 1),
                         "epochs": int(res.results["epochs_run"].sum())}
            log.warning("nested tuning %s: %d trials, %d epochs, inner val mAP %.4f (%.0f s)", key,
                        done[key]["trials"], done[key]["epochs"], done[key]["inner_val_map"], done[key]["wall_s"])
            save(done)
    finally:
        _kill(owner)
    return done


def _ask(owner: Any, run: dict[str, Any]) -> None:
    owner.get.remote(run)  # prepared now, served from the owner's cache when the search's trials ask


def _start_owner(name: str, cpus: int | None = None) -> Any:
    """A background data owner (the CF fits ahead of the searches): it reserves no CPU, so the
    running search's trials keep their slots; ``cpus``: its torch threads."""
    from raysearch.search.shared import SHARED_ACTOR_PREFIX, start_shared_actor

    return start_shared_actor(SHARED_ACTOR_PREFIX + name, reserve=False, threads=cpus)


def cf_prefit_runs(cfg: ExperimentConfig, variants: Sequence[Variant], runs: dict[str, RunConfig],
                   done: dict[str, Any]) -> list[dict[str, Any]]:
    """One run per distinct CF model the nested tuning and then the units will fit, in the order
    they will ask: the inner splits of the searches not yet done, then the outer folds; one per
    on-disk CF cache entry (:func:`raysearch.cf.vectors.cache_key`: train items x CF config).  A
    fold's inner view keeps its train items, and ratios and seeds do not change them, so this is
    one fit per fold.  The outer folds only when the tune space searches no ``cf.*`` parameter
    (the units' CF config is then known before the searches end)."""
    from raysearch.cf.vectors import cache_key
    from raysearch.data.splits import make_split
    from raysearch.search.space import default_space_path, load_space
    from raysearch.train.methods import METHODS

    ds = _dataset(cfg.dataset, cfg.data_root)
    tuned = [v for v in variants if config_owner(cfg, v, variants) == v.name and METHODS.get(v.method).uses_cf]
    wanted = [inner_space(cfg, runs[v.name], v, float(r), f).base for r in cfg.label_ratios for f in range(cfg.folds)
              for v in tuned if tune_key(r, f, v.name) not in done]
    fixed_cf = not any(p.name.startswith("cf.") for p in load_space(cfg.tune_space or default_space_path(cfg.dataset)).params)
    if fixed_cf:
        wanted += [unit_run(cfg, runs[v.name], f, s, float(r)) for f in range(cfg.folds) for s in range(cfg.seeds)
                   for r in cfg.label_ratios for v in variants if not v.shuffled_from and METHODS.get(v.method).uses_cf]
    out, seen = [], set()
    for run in wanted:
        k = cache_key(ds, make_split(ds, run.split), run.cf)
        if k not in seen:
            seen.add(k)
            out.append(to_dict(run))
    return out


def _cf_cache_entry(cfg: ExperimentConfig, run: RunConfig) -> str | None:
    """The on-disk CF cache key ``run``'s data needs (None: its method uses no CF)."""
    from raysearch.cf.vectors import cache_key
    from raysearch.data.splits import make_split
    from raysearch.train.methods import METHODS

    if not METHODS.get(run.train.method).uses_cf:
        return None
    ds = _dataset(cfg.dataset, cfg.data_root)
    return cache_key(ds, make_split(ds, run.split), run.cf)


def cf_ready(cfg: ExperimentConfig, run: RunConfig) -> bool:
    """``run``'s CF model is in the on-disk cache (or it needs none)."""
    from raysearch.cf.vectors import cache_path

    key = _cf_cache_entry(cfg, run)
    return key is None or cache_path(key, cfg.data_root).is_file()


@dataclass
class CFPrefit:
    """The background owner fitting the experiment's CF models (:func:`start_cf_prefit`) and, per
    on-disk CF cache key, the run it was given for it (the owner's CF locks are per run config)."""

    actor: Any
    runs: dict[str, dict[str, Any]]

    def wait(self, cfg: ExperimentConfig, run: RunConfig) -> None:
        """Block until ``run``'s CF model is on disk (fitted now if its turn has not come): the
        search's trials would otherwise wait for their own owner to fit it a second time."""
        if cf_ready(cfg, run):
            return
        listed = self.runs.get(_cf_cache_entry(cfg, run) or "")
        if listed is None:  # not one fitted here: the search's owner fits it, as before
            return
        import ray

        try:
            ray.get(self.actor.fit_cf.remote(listed))
        except Exception as e:  # only a head start: the search's own owner fits it (and reports an error)
            log.warning("background CF fit failed (%s); the search fits it itself", e)

    def stop(self) -> None:
        _kill(self.actor)


def start_cf_prefit(cfg: ExperimentConfig, out: Path, variants: Sequence[Variant], runs: dict[str, RunConfig],
                    done: dict[str, Any]) -> CFPrefit | None:
    """A background owner (no CPU reserved, one torch thread) fitting :func:`cf_prefit_runs` into the
    on-disk CF cache while the searches run; each search's owner then reads its fold's CF model
    instead of fitting it while the trials wait (35-55 s per fold on the posters' VAECF, 2 loaded
    CPUs, was a search's biggest cost).  A search whose fit is not done yet waits for it
    (:meth:`CFPrefit.wait`) instead of fitting it a second time.  ``None`` when there is nothing to fit."""
    from raysearch.search import cluster

    todo = cf_prefit_runs(cfg, variants, runs, done)
    if not todo:
        return None
    cluster.start_trials_engine(cfg.address, cpus_per_trial=cfg.cpus_per_trial, gpus_per_trial=cfg.gpus_per_trial,
                                workers_per_trial=cfg.workers_per_trial, distributed=cfg.distributed, what="units")
    actor = _start_owner(f"experiment-cf-{out.name}-{os.getpid()}", cpus=1)
    actor.prefetch.remote(todo)
    return CFPrefit(actor, {_cf_cache_entry(cfg, from_dict(RunConfig, r)) or "": r for r in todo})


def _kill(actor: Any) -> None:
    if actor:
        import ray

        try:
            ray.kill(actor)
        except Exception:  # already gone: nothing to free
            pass


class NextData:
    """One inner search's Tune callback (:func:`next_data`): once all its ``trials`` have started
    and one has ended (a slot is free and no trial of this search will take it), ask the tuning's
    data owner to prepare the *next* search's base configuration (split, the fold's CF vectors
    from the on-disk cache, weights: every inner trial of a search shares that data key, the
    arm's method, weighting and split being pinned), so its first trials find their data ready.
    Only when that CF model is on disk: a fit still running in the background owner is not
    repeated here.  A failed ask is only a lost head start (the search asks itself)."""

    def __init__(self, trials: int, run: RunConfig, ask: Any, ready: Any = None) -> None:
        self.trials, self.run = trials, to_dict(run)
        self.started = 0
        self.asked = False
        self._ask = ask
        self._ready = ready or (lambda: True)

    def on_trial_start(self, iteration: int = 0, trials: Any = None, trial: Any = None, **info: Any) -> None:
        self.started += 1

    def on_trial_complete(self, iteration: int = 0, trials: Any = None, trial: Any = None, **info: Any) -> None:
        self._maybe_ask()

    def on_trial_error(self, iteration: int = 0, trials: Any = None, trial: Any = None, **info: Any) -> None:
        self._maybe_ask()

    def _maybe_ask(self) -> None:
        if self.asked or self.started < self.trials:
            return
        self.asked = True
        try:
            if self._ready():
                self._ask(self.run)
        except Exception as e:  # only a head start
            log.warning("could not ask for the next inner search's data early: %s", e)


def next_data(trials: int, run: RunConfig, ask: Any, ready: Any = None) -> Any:
    """:class:`NextData` as a Tune ``Callback`` (built lazily, like the sweep's own callbacks:
    importing this module does not import Ray)."""
    from ray.tune import Callback

    class NextDataCallback(NextData, Callback):
        pass

    return NextDataCallback(trials, run, ask, ready=ready)


def chosen_run(cfg: ExperimentConfig, tuned: dict[str, Any], runs: dict[str, RunConfig],
               variants: Sequence[Variant]) -> Any:
    """``(ratio, fold, variant) -> RunConfig``: the arm's tuned (or fixed) configuration."""
    by_name = {v.name: v for v in variants}

    def run_of(ratio: float, fold: int, v: Variant) -> RunConfig:
        if not cfg.tune:
            return runs[v.name]
        owner = config_owner(cfg, v, variants)
        chosen = from_dict(RunConfig, tuned[tune_key(ratio, fold, owner)]["run"], where=f"tuned {owner}")
        chosen = dataclasses.replace(chosen, train=dataclasses.replace(
            chosen.train, **({"epochs": cfg.epochs} if cfg.epochs else {})))
        return arm_run(chosen, by_name[v.name])

    return run_of


def tuning_frame(tuned: dict[str, Any]) -> pd.DataFrame:
    """One row per inner search: the configuration it chose (every searched field flattened)."""
    from raysearch.search.tracking import flat_config

    rows = []
    for t in tuned.values():
        run = from_dict(RunConfig, t["run"], where="tuned")
        rows.append({k: t[k] for k in ("ratio", "fold", "variant", "inner_val_map", "trials", "epochs", "wall_s")}
                    | {k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in flat_config(run).items()
                       if k.startswith(("train.", "cf."))})
    return pd.DataFrame(rows)


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


#: settings a resumed experiment takes from the new command (where and how to run, not what)
RUNTIME_FIELDS = ("out", "resume", "report_only", "address", "max_concurrent", "cf_tables", "wandb", "wandb_project")


def resumed_config(cfg: ExperimentConfig, meta: dict[str, Any], meta_path: Path,
                   given: frozenset[str] | None = None) -> ExperimentConfig:
    """The saved settings, refusing flags of the new command that contradict them (a flag left at
    its default is not a contradiction: ``--resume --out DIR`` alone continues the run as it was)."""
    try:
        saved_raw = dict(meta["config"])
        saved = ExperimentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved_raw.items()
                                    if k in {f.name for f in dataclasses.fields(ExperimentConfig)}})
    except (KeyError, TypeError, ConfigError) as e:
        raise ConfigError(f"{meta_path}: not an experiment record this version can resume ({e})") from None
    diffs = contradictions(cfg, saved, skip=RUNTIME_FIELDS, flags=given)
    if diffs:
        raise ConfigError(f"--resume: the command contradicts the saved run ({meta_path}): " + "; ".join(diffs)
                          + ". Drop those flags to continue it, or start a new experiment with another --out")
    # W&B and the CF tables can be turned off for the rest of a run, never on again
    return dataclasses.replace(saved, **{k: getattr(cfg, k) for k in RUNTIME_FIELDS if k not in ("cf_tables", "wandb")},
                               cf_tables=cfg.cf_tables and saved.cf_tables, wandb=cfg.wandb and saved.wandb)


def _saved_meta(out: Path) -> dict[str, Any]:
    """``experiment.json``, complete and readable, or a one-line error naming it."""
    meta_path = out / META_FILE
    if not meta_path.is_file():
        raise ConfigError(f"--resume: no experiment at {out} (no {META_FILE}); give the --out of the run to continue")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{meta_path}: unreadable or truncated ({type(e).__name__}: {str(e)[:120]}); "
                          "the experiment cannot be resumed from it") from None
    missing = [k for k in ("config", "variants", "runs", "source", "dataset_fingerprint") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ConfigError(f"{meta_path}: incomplete experiment record (missing {', '.join(missing)}); cannot resume")
    return meta


def run_experiment(cfg: ExperimentConfig, verbose: int = 0, given: frozenset[str] | None = None) -> ExperimentResult:
    """Run (or ``resume``) nested tuning and the grid of units, then write every output (see :mod:`.report`)."""
    from raysearch._io import run_lock

    t0 = time.perf_counter()
    out = _out_dir(cfg)
    # two commands on one folder: the second is refused in one line (the lock sits beside the folder)
    with run_lock(out, what=f"experiment folder {out}"):
        return _run_experiment(cfg, out, t0, given)


def _run_experiment(cfg: ExperimentConfig, out: Path, t0: float, given: frozenset[str] | None) -> ExperimentResult:
    from raysearch.data.registry import load_dataset
    from raysearch.experiment.report import write_outputs

    meta = _saved_meta(out) if cfg.resume else None
    if meta is not None:
        cfg = resumed_config(cfg, meta, out / META_FILE, given)
    variants = parse_variants(cfg.variants, cfg.shuffle_control)
    ds = load_dataset(cfg.dataset, cfg.data_root)  # a missing dataset: one error here, not N failed trials
    if ds.n_items < cfg.folds * 2:
        raise ConfigError(f"--folds {cfg.folds} is too many for {ds.n_items} items of {ds.name!r}")
    if meta is not None:
        if meta["dataset_fingerprint"] != ds.fingerprint:
            raise ConfigError(f"--resume: dataset {ds.name!r} changed since the experiment began (fingerprint "
                              f"{meta['dataset_fingerprint'][:12]} -> {ds.fingerprint[:12]}); its finished units would "
                              "be pooled with units of other content. Start a new experiment with another --out")
        runs = {k: from_dict(RunConfig, v, where=f"{out / META_FILE} runs.{k}") for k, v in meta["runs"].items()}
        source = meta["source"]
    else:
        runs, source = resolve_configs(cfg, variants)
    _check_trials_dir(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    record = dict(meta) if meta is not None else {
        "config": dataclasses.asdict(cfg), "variants": [dataclasses.asdict(v) for v in variants],
        "runs": {k: to_dict(v) for k, v in runs.items()}, "source": source, "seeds": list(range(cfg.seeds)),
        "dataset_fingerprint": ds.fingerprint, "tuned": {}}
    if meta is None:  # a resume keeps the record of how the run was made
        write_json(out / META_FILE, record)
    engine = _Engine(cfg, out)
    prefit = None
    try:
        if cfg.tune and not cfg.report_only:
            def save(done: dict[str, Any]) -> None:
                record["tuned"] = done
                write_json(out / META_FILE, record)
            prefit = start_cf_prefit(cfg, out, variants, runs, dict(record.get("tuned") or {}))
            run_tuning(cfg, out, variants, runs, dict(record.get("tuned") or {}), save, prefit)
        tuned = dict(record.get("tuned") or {})
        if cfg.tune:
            with atomic_path(out / TUNING_FILE) as tmp:
                tuning_frame(tuned).to_parquet(tmp, index=False)
        if cfg.report_only and cfg.tune and any(tune_key(r, f, config_owner(cfg, v, variants)) not in tuned
                                                for r in cfg.label_ratios for f in range(cfg.folds) for v in variants):
            results = engine.restored_results()
        else:
            grid = units_grid(cfg, variants, chosen_run(cfg, tuned, runs, variants))
            results = engine.run_units(grid, variants)
    finally:
        engine.stop()
        if prefit is not None:
            prefit.stop()
    units, preds = collect(results, variants, ds, cfg)
    with atomic_path(out / EXPERIMENT_FILE) as tmp:
        units.to_parquet(tmp, index=False)
    with atomic_path(out / PREDICTIONS_FILE) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **preds, y_true=ds.label_matrix.astype(np.int8), label_names=np.array(ds.label_names))
    summary, files = write_outputs(out, cfg, variants, runs, source, units, ds)
    finished, planned = unit_counts(cfg, variants, units)
    return ExperimentResult(out, units, summary, files, time.perf_counter() - t0, planned - finished)


def _check_trials_dir(cfg: ExperimentConfig, out: Path) -> None:
    from ray import tune

    trials_path = out / TRIALS_DIR
    if cfg.resume:
        if not cfg.tune and not tune.Tuner.can_restore(str(trials_path)):
            raise ConfigError(f"--resume: no restorable trials at {trials_path}")
    elif trials_path.exists() or (out / META_FILE).exists():
        raise ConfigError(f"{out} already holds an experiment; use --resume to continue it or another --out")


class _Engine:
    """The sweep's engine for the experiment's units: Ray, one data owner, the sweep trainable."""

    def __init__(self, cfg: ExperimentConfig, out: Path) -> None:
        self.cfg, self.out, self.actor, self.actor_name = cfg, out, None, None

    def _start(self, base: RunConfig) -> Any:
        from raysearch.search import cluster
        from raysearch.search.shared import SHARED_ACTOR_PREFIX, start_shared_actor
        from raysearch.search import trainables
        from raysearch.search.trainables import TrialContext, trial_settings

        cfg = self.cfg
        cluster.start_trials_engine(cfg.address, cpus_per_trial=cfg.cpus_per_trial, gpus_per_trial=cfg.gpus_per_trial,
                                    workers_per_trial=cfg.workers_per_trial, distributed=cfg.distributed, what="units")
        self.actor_name = f"{SHARED_ACTOR_PREFIX}experiment-{self.out.name}-{os.getpid()}"
        self.actor = start_shared_actor(self.actor_name)
        import ray

        ray.get(self.actor.check.remote(cfg.dataset, cfg.data_root))
        ctx = TrialContext(space=UnitGrid(base=base), base=base, shared_actor=self.actor_name,
                           storage=str(self.out / TRIALS_DIR / "train"), max_t=0, save_weights=cfg.keep_models,
                           settings=trial_settings(cfg))
        return trainables.with_resources(ctx)  # the sweep's own trainable

    def _callbacks(self) -> list[Any]:
        from raysearch.search.results import classify
        from raysearch.search.tracking import WandbSettings, sweep_wandb_callback, wandb_mode
        from raysearch.search.tune import _auto_loggers, _retry_counter

        cfg = self.cfg
        self.retries = _retry_counter(self.out)
        wb = sweep_wandb_callback(WandbSettings(enabled=cfg.wandb, project=cfg.wandb_project, group=self.out.name,
                                                dir=str(self.out), mode=wandb_mode() if cfg.wandb else "disabled"),
                                  UnitGrid(), lambda trial, failed: classify(dict(trial.last_result or {}), failed, "none", 0))
        return _auto_loggers([self.retries, *([wb] if wb else [])])

    def run_units(self, grid: list[dict[str, Any]], variants: Sequence[Variant]) -> Any:
        from ray import tune

        from raysearch.search import cluster

        cfg = self.cfg
        path = str(self.out / TRIALS_DIR)
        if cfg.report_only:  # read what the units left: no Ray, no data owner
            return self.restored_results()
        trainable = self._start(from_dict(RunConfig, grid[0]["run"]))
        cbs = self._callbacks()
        if cfg.resume and tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
            _set_callbacks(tuner, cbs)
            return tuner.fit()
        conc = cluster.max_concurrent(cfg.max_concurrent, len(grid), cfg.cpus_per_trial, cfg.gpus_per_trial)
        tuner = tune.Tuner(
            trainable, param_space={"unit": tune.grid_search(grid)},
            tune_config=tune.TuneConfig(num_samples=1, reuse_actors=not cfg.distributed, max_concurrent_trials=conc),
            run_config=tune.RunConfig(name=TRIALS_DIR, storage_path=str(self.out), verbose=0, callbacks=cbs,
                                      failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        return tuner.fit()

    def restored_results(self) -> Any:
        """The units' results as the trials left them, read from the experiment's files (Tune's
        ``ExperimentAnalysis``): ``--report-only`` starts neither Ray nor a data owner for them."""
        from ray import tune

        path = str(self.out / TRIALS_DIR)
        if not tune.Tuner.can_restore(path):  # no unit reported yet
            return []
        return tune.ResultGrid(tune.ExperimentAnalysis(path))

    def stop(self) -> None:
        if self.actor is not None:
            import ray

            try:
                ray.kill(self.actor)
            except Exception:  # already gone with its node: nothing to free
                pass


def _set_callbacks(tuner: Any, cbs: list[Any]) -> None:
    """A restored Tuner keeps the callbacks it was built with; ours are new objects (see search.tune)."""
    from raysearch._ray_compat import set_restored_callbacks

    set_restored_callbacks(tuner, cbs)


def pred_key(ratio: float, variant: str, seed: int) -> str:
    return f"r{ratio:g}|{variant}|s{seed}"


def collect(results: Any, variants: Sequence[Variant], ds: Any, cfg: ExperimentConfig
            ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One row per unit (errors and units not run included) + pooled out-of-fold scores per
    (ratio, variant, seed).  Stop reasons are the sweep's (:class:`StopReason`)."""
    from raysearch.metrics import per_class_ap
    from raysearch.search.results import classify, last_line
    from raysearch.search.trainables import SCORES_FILE

    by_name = {v.name: v for v in variants}
    y = ds.label_matrix
    rows, parts, seen = [], {}, set()
    for r in results:
        u = (r.config or {}).get("unit")
        v = by_name.get((u or {}).get("variant"))
        if v is None:
            continue
        m = dict(r.metrics or {})
        ratio, fold, seed = float(u["label_ratio"]), int(u["fold"]), int(u["seed"])
        seen.add((ratio, fold, seed, v.name))
        reason = classify(m, r.error is not None, "none", 0)
        row = _unit_row(v, ratio, fold, seed, u["run"], reason)
        row.update(test_map=float(m.get("test_map", math.nan)) if m.get("final") else math.nan,
                   val_map=float(m.get("best_val_map", math.nan)) if m.get("final") else math.nan,
                   epochs_run=int(m.get("epochs_run", 0) or 0), best_epoch=int(m.get("best_epoch", 0) or 0),
                   train_time_s=float(m.get("train_time_s", math.nan)), data_s=float(m.get("data_s", math.nan)),
                   node=m.get("node_id"), gpu_ids=m.get("gpu_ids"), resumed_from_epoch=int(m.get("resumed_from_epoch", 0) or 0),
                   error=None if r.error is None else last_line(r.error),
                   **{k: float(m[k]) for k in m if k.startswith("weights_")})
        if r.checkpoint is not None and r.error is None and m.get("final"):
            with r.checkpoint.as_directory() as d:
                p = Path(d, SCORES_FILE)
                if p.is_file():
                    z = np.load(p)
                    items, scores = z["items"], z["scores"]
                    row["per_class_ap"] = [float(x) for x in per_class_ap(y[items], scores)]
                    row["n_test"] = int(len(items))
                    parts.setdefault(pred_key(ratio, v.name, seed), []).append((items, scores))
        rows.append(row)
    for f in range(cfg.folds):  # units the grid never reached (report-only before the run): interrupted
        for s in range(cfg.seeds):
            for ratio in cfg.label_ratios:
                for v in variants:
                    if (float(ratio), f, s, v.name) not in seen:
                        rows.append(_unit_row(v, float(ratio), f, s, None, StopReason.INTERRUPTED.value))
    units = pd.DataFrame(rows).sort_values(["label_ratio", "variant", "fold", "seed"], kind="stable", ignore_index=True)
    preds = {}
    for k, chunks in parts.items():
        full = np.full((ds.n_items, chunks[0][1].shape[1]), np.nan, dtype=np.float32)
        for items, scores in chunks:
            full[items] = scores
        preds[k] = full  # NaN rows: items of a fold whose unit failed
    return units, preds


@functools.lru_cache(maxsize=256)
def _split_sizes(key: str) -> dict[str, int]:
    """Test, train (+ val: what the model is fitted and early-stopped on) and labelled-train sizes of a unit's split."""
    from raysearch.data.registry import load_dataset
    from raysearch.data.splits import make_split

    d = json.loads(key)
    sp = make_split(_dataset(d["dataset"], d["data_root"]), from_dict(SplitConfig, d["split"], where="unit split"))
    return {"n_test": int(len(sp.test)), "n_train": int(len(sp.train) + len(sp.val)), "n_train_labelled": int(len(sp.train_labelled))}


@functools.lru_cache(maxsize=4)
def _dataset(name: str, root: str | None) -> Any:
    from raysearch.data.registry import load_dataset

    return load_dataset(name, root)


def _unit_row(v: Variant, ratio: float, fold: int, seed: int, run: dict[str, Any] | None, reason: str) -> dict[str, Any]:
    n = _split_sizes(json.dumps({k: run[k] for k in ("dataset", "data_root", "split")}, sort_keys=True)) if run else {}
    return {"variant": v.name, "method": v.method, "weighting": v.weighting if _weighted(v.method) else None,
            "shuffled_cf": v.shuffled_from is not None, "label_ratio": ratio, "fold": fold, "seed": seed,
            "test_map": math.nan, "val_map": math.nan, "epochs_run": 0, "best_epoch": 0, "stop_reason": reason,
            "train_time_s": math.nan, "data_s": math.nan, "node": None, "gpu_ids": None, "resumed_from_epoch": 0,
            "n_test": n.get("n_test", 0), "n_train": n.get("n_train", 0), "n_train_labelled": n.get("n_train_labelled", 0),
            "per_class_ap": None, "error": None, "config": json.dumps(run) if run is not None else None}
