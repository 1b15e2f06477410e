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


@dataclass(frozen=True)
class Method:
    name: str
    uses_cf: bool
    description: str

    def stages(self, cfg: TrainConfig) -> list[Stage]:
        e = cfg.epochs
        if self.name == "image_only":
            return [Stage("main", e, True, None)]
        if self.name == "mtl":
            return [Stage("joint", e, True, "reconstruct")]
        if self.name == "contrastive":
            return [Stage("joint", e, True, "triplet")]
        if self.name == "sequential":
            if e < 2:
                raise InputError("method 'sequential' needs train.epochs >= 2 (an aux stage and a label stage)")
            a = cfg.aux_epochs if cfg.aux_epochs is not None else e // 2
            if not 1 <= a < e:
                raise InputError(f"train.aux_epochs={a} must be in [1, epochs-1={e - 1}] for 'sequential'")
            return [Stage("aux", a, False, "reconstruct", track_best=False), Stage("finetune", e - a, True, None)]
        raise AssertionError(self.name)


METHODS: Registry[Method] = Registry("method")
for _m in (
    Method("image_only", False, "labels only"),
    Method("mtl", True, "MTL-reconstruct: BCE + alpha * min(w, Omega) * exp(L1 + L2)"),
    Method("sequential", True, "aux-only stage, then label-only fine-tuning"),
    Method("contrastive", True, "BCE + alpha * triplet loss on predicted CF vectors"),
):
    METHODS.register(_m.name, obj=_m)
