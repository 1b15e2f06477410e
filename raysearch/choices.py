"""The string choices of the configs as registries of objects that carry their behaviour.

``SweepConfig.scheduler`` / ``.search``, ``CFConfig.trainer``, ``TrainConfig.trunk`` /
``.aux_norm`` and ``ExperimentConfig.shuffle_control`` name an entry here.  The configs check
the name once (:func:`raysearch.config.check_choice`, a :class:`~raysearch.config.ConfigError`
listing the choices); the code that uses a choice asks its entry what to do (``SCHEDULERS.get(
name).build(...)``) and never compares names, so a new choice is one ``register`` call.

Light on purpose: ``raysearch.config`` imports this module, and ``import raysearch.config`` must
not import torch, Ray or Optuna.  Factories that need them import them when called (:func:`lazy`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from raysearch.registry import Registry

T = TypeVar("T")


def lazy(module: str, attr: str) -> Callable[..., Any]:
    """``module.attr(*args)``, imported at the first call (a heavy module stays unimported until then)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    return call


# ---------------------------------------------------------------------------- sweep: searcher

@dataclass(frozen=True)
class Searcher:
    """``raysearch tune --search``: the Optuna sampler behind ``OptunaSearch``."""

    name: str
    help: str
    sampler: Callable[[Any], Any]   # SweepConfig -> an optuna sampler
    seeds_defaults: bool = False    # with --seed-defaults, the space's base config is its first trial


def tpe_sampler(seed: int, n_startup_trials: int) -> Any:
    """raysearch's TPE (multivariate: the space's parameters interact, e.g. alpha with omega)."""
    import optuna

    return optuna.samplers.TPESampler(multivariate=True, seed=seed, n_startup_trials=n_startup_trials)


def _tpe(cfg: Any) -> Any:
    return tpe_sampler(cfg.seed, max(3, min(10, cfg.trials // 3)))


def _random(cfg: Any) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=cfg.seed)


SEARCHERS: Registry[Searcher] = Registry("searcher")
for _s in (Searcher("optuna", "TPE, multivariate", _tpe, seeds_defaults=True),
           Searcher("random", "Optuna's RandomSampler (a baseline)", _random)):
    SEARCHERS.register(_s.name, obj=_s)


# --------------------------------------------------------------------------- sweep: scheduler

@dataclass(frozen=True)
class Scheduler:
    """``raysearch tune --scheduler``: the Tune trial scheduler."""

    name: str
    help: str
    build: Callable[[Any, Any, Path], Any]  # (SweepConfig, SearchSpace, run_dir) -> a Tune scheduler
    rungs: bool = False  # stops trials at rungs up to the last epoch (trials keep max_t out of their last report)


def _fifo(cfg: Any, space: Any, run_dir: Path) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


SCHEDULERS: Registry[Scheduler] = Registry("scheduler")
for _c in (Scheduler("asha", "ASHA early stopping", lazy("raysearch.search.tune", "asha_scheduler"), rungs=True),
           Scheduler("none", "no early stopping", _fifo)):
    SCHEDULERS.register(_c.name, obj=_c)


# ------------------------------------------------------------------------ sweep: rung metric

@dataclass(frozen=True)
class RungMetric:
    """``raysearch tune --rung-metric`` / a space's ``asha.metric``: the per-epoch metric ASHA
    compares at its rungs (the searcher and the pick stay on val mAP)."""

    name: str
    help: str


RUNG_METRICS: Registry[RungMetric] = Registry("rung metric")
for _r in (RungMetric("val_map", "the epoch's val mAP (the metric the sweep selects on)"),
           RungMetric("val_auc", "the epoch's macro val ROC AUC: every positive-negative pair counts; on the "
                                 "synthetic world it ranked configurations by test mAP better than val mAP "
                                 "from epoch 2 on")):
    RUNG_METRICS.register(_r.name, obj=_r)
#: a space without ``asha.metric`` (and every sweep before the option existed) cuts on val mAP.
#: Each name must be a key of the training loop's per-epoch report (tests/test_train.py checks it)
DEFAULT_RUNG_METRIC = "val_map"


# ----------------------------------------------------------------------------- cf.trainer

@dataclass(frozen=True)
class CFTrainer:
    """``cf.trainer``: the loop that fits VAECF (same model, loss and Adam either way)."""

    name: str
    help: str
    fit: Callable[[Any, Any, Any], Any]  # (BiasedVAECF, train_set, val_set) -> the fitted recommender
    early_stopping: bool = False         # honours cf.patience


CF_TRAINERS: Registry[CFTrainer] = Registry("cf.trainer")
for _t in (CFTrainer("sparse", "sparse batches, all cores", lazy("raysearch.cf.models.vaecf.recommender", "fit_sparse"),
                     early_stopping=True),
           CFTrainer("cornac", "Cornac's own loop", lazy("raysearch.cf.models.vaecf.recommender", "fit_cornac"))):
    CF_TRAINERS.register(_t.name, obj=_t)


# ------------------------------------------------------------------------------ train.trunk

@dataclass(frozen=True)
class Trunk:
    """``train.trunk``: what sits between the backbone's pooled features and the heads."""

    name: str
    help: str
    build: Callable[[int, int], Any] | None  # (feature_dim, trunk_hidden) -> nn.Module; None: nothing
    freezes_backbone: bool = False           # trainable_blocks unset: the whole backbone frozen (features cached)


TRUNKS: Registry[Trunk] = Registry("train.trunk")
for _k in (Trunk("backbone", "heads on the pooled features", None),
           Trunk("mlp", "a shared 2-layer MLP under both heads", lazy("raysearch.model.heads", "MLPTrunk"),
                 freezes_backbone=True)):
    TRUNKS.register(_k.name, obj=_k)


# ---------------------------------------------------------------------------- train.aux_norm

def _weight_sum(w: Any, m: Any) -> Any:
    return w.sum()


def _rows(w: Any, m: Any) -> Any:
    return m.sum()


@dataclass(frozen=True)
class AuxNorm:
    """``train.aux_norm``: the divisor of the auxiliary loss's weighted sum (see ``train.losses``)."""

    name: str
    help: str
    denominator: Callable[[Any, Any], Any]  # (clipped weights, has-CF mask) -> divisor


AUX_NORMS: Registry[AuxNorm] = Registry("train.aux_norm")
for _n in (AuxNorm("weight_sum", "relative weights (the authors' code)", _weight_sum),
           AuxNorm("mean", "over the rows with a CF vector", _rows)):
    AUX_NORMS.register(_n.name, obj=_n)


# --------------------------------------------------------------- experiment --shuffle-control

def _no_arm(bases: Sequence[T]) -> list[T]:
    return []


def _first_arm(bases: Sequence[T]) -> list[T]:
    return list(bases[:1])


def _every_arm(bases: Sequence[T]) -> list[T]:
    return list(bases)


@dataclass(frozen=True)
class ShuffleControl:
    """``raysearch experiment --shuffle-control``: which CF-weighted arms get a shuffled-CF copy."""

    name: str
    help: str
    arms: Callable[[Sequence[Any]], list[Any]]  # the CF-weighted arms -> those copied with CF shuffled
    adds_arms: bool = True                      # needs a CF-weighted arm to copy


SHUFFLE_CONTROLS: Registry[ShuffleControl] = Registry("shuffle control")
for _x in (ShuffleControl("none", "no control arm", _no_arm, adds_arms=False),
           ShuffleControl("first", "the first CF-weighted arm", _first_arm),
           ShuffleControl("all", "one per CF-weighted arm", _every_arm)):
    SHUFFLE_CONTROLS.register(_x.name, obj=_x)
