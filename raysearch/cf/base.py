"""The CF model base class and its registry (Cornac's layout: one adapter per model over a common base).

Why adapters: every model is a *real* Cornac recommender; the adapter only translates
:class:`CFConfig` into the Cornac constructor and reads the item factors back, so
training is Cornac's own code.  The adapters live in :mod:`raysearch.cf.models` (one
module per model) and register themselves in ``CF_MODELS`` when that package is
imported, which ``import raysearch.cf`` does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from raysearch.config import CFConfig
from raysearch.errors import RaysearchError
from raysearch.registry import Registry

if TYPE_CHECKING:
    from raysearch.cf.cornac_data import CornacData


class CFError(RaysearchError, ValueError):
    """Bad input to the CF phase (empty matrix, corrupt cache, unusable model)."""


class CFModel:
    """Adapter base: build a Cornac recommender from a :class:`CFConfig`, read item vectors back.

    Subclasses set ``name`` and implement :meth:`build` (an *unfitted* Cornac model,
    also what the AUC table evaluates) and :meth:`item_vectors` (from the fitted one).
    """

    name: ClassVar[str] = ""
    #: whether the model learns a per-item bias that ``ItemVectors.bias`` can carry
    has_bias: ClassVar[bool] = False

    def __init__(self, cfg: CFConfig) -> None:
        self.cfg = cfg
        self.recommender: Any = None

    def build(self) -> Any:
        raise NotImplementedError

    def fit(self, data: "CornacData") -> "CFModel":
        self.recommender = self.build()
        self.recommender.fit(data.train_set)
        return self

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(n_cornac_items, dim) float32 factors and (n_cornac_items,) bias or None."""
        raise NotImplementedError


CF_MODELS: Registry[type[CFModel]] = Registry("CF model")


def register_cf_model(name: str):
    def deco(cls: type[CFModel]) -> type[CFModel]:
        cls.name = name
        CF_MODELS.register(name, obj=cls)
        return cls

    return deco


def create_cf_model(cfg: CFConfig) -> CFModel:
    return CF_MODELS.get(cfg.model)(cfg)
