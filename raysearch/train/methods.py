"""Training methods as data: each is a list of stages telling the loop which losses to use.

* ``image_only`` - labels only (the baseline).
* ``mtl`` - MTL-reconstruct: main + alpha * min(w, Omega) * l_CF_R, weights from
  ``train.weighting`` (``uniform`` | ``interaction`` | ``loss``).
* ``sequential`` - stage 1 trains the auxiliary reconstruction only (``aux_epochs``, default
  half the budget), stage 2 fine-tunes on labels only for the remaining epochs; the total
  epoch budget equals the other methods'.  Best-checkpoint tracking and early stopping only
  run in stage 2 (stage 1's classifier is untrained, its val mAP is reported but not kept).
* ``contrastive`` - main + alpha * triplet loss on predicted CF vectors: each train item with a
  CF vector is an anchor once per epoch; positive = the train item whose CF vector is nearest
  in L2; negative = a random train item with a CF vector; margin ``tau``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from raysearch.errors import InputError
from raysearch.config import TrainConfig
from raysearch.registry import Registry


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: int
    main: bool              # class-balanced BCE on labelled rows
    aux: str | None         # None | "reconstruct" | "triplet"
    track_best: bool = True  # best checkpoint / early stopping count in this stage


def _image_only(cfg: TrainConfig) -> list[Stage]:
    return [Stage("main", cfg.epochs, True, None)]


def _mtl(cfg: TrainConfig) -> list[Stage]:
    return [Stage("joint", cfg.epochs, True, "reconstruct")]


def _contrastive(cfg: TrainConfig) -> list[Stage]:
    return [Stage("joint", cfg.epochs, True, "triplet")]


def _sequential(cfg: TrainConfig) -> list[Stage]:
    e = cfg.epochs
    if e < 2:
        raise InputError("method 'sequential' needs train.epochs >= 2 (an aux stage and a label stage)")
    a = cfg.aux_epochs if cfg.aux_epochs is not None else e // 2
    if not 1 <= a < e:
        raise InputError(f"train.aux_epochs={a} must be in [1, epochs-1={e - 1}] for 'sequential'")
    return [Stage("aux", a, False, "reconstruct", track_best=False), Stage("finetune", e - a, True, None)]


@dataclass(frozen=True)
class Method:
    """A registered training method: its stage plan lives on the object, so a new method is one
    ``METHODS.register`` call and the loop never branches on a method's name."""

    name: str
    uses_cf: bool
    description: str
    plan: Callable[[TrainConfig], list[Stage]]
    reads: frozenset[str] = frozenset()  # method-specific train.* options it uses (W&B hides the rest)

    def stages(self, cfg: TrainConfig) -> list[Stage]:
        return self.plan(cfg)

    @property
    def weighted(self) -> bool:
        """Its reconstruction loss is weighted by ``train.weighting`` (the others use uniform)."""
        return "weighting" in self.reads


_CF = frozenset({"alpha", "cf_standardize"})
_WEIGHTED = _CF | {"weighting", "omega", "aux_norm"}


METHODS: Registry[Method] = Registry("method")
for _m in (
    Method("image_only", False, "labels only", _image_only),
    Method("mtl", True, "MTL-reconstruct: BCE + alpha * min(w, Omega) * exp(L1 + L2)", _mtl, _WEIGHTED),
    Method("sequential", True, "aux-only stage, then label-only fine-tuning", _sequential,
           _WEIGHTED | {"aux_epochs"}),
    Method("contrastive", True, "BCE + alpha * triplet loss on predicted CF vectors", _contrastive, _CF | {"tau"}),
):
    METHODS.register(_m.name, obj=_m)
