"""CF phase (paper Sec. 3.3, 3.4, 4.1.3, 4.2): Cornac item vectors (Parquet-cached), the AUC
check against most-popular, CF2Label and the per-item weights of the auxiliary loss.

Importing this package registers every CF model adapter (:mod:`raysearch.cf.models`) without
importing torch or Cornac: the CLI and the sweep driver read ``CF_MODELS`` names at start-up.
CF2Label (a torch module) and the AUC table (Cornac) resolve on first use."""
from __future__ import annotations

from typing import TYPE_CHECKING

from raysearch._lazy import lazy_api
from raysearch.cf.base import CF_MODELS, CFError, CFModel, create_cf_model, register_cf_model
from raysearch.cf.vectors import ItemVectors, cache_key, compute_item_vectors, read_item_vectors
from raysearch.cf.weights import WEIGHTINGS, item_weights
from raysearch.cf import models  # noqa: F401  (registers the CF_MODELS adapters)

_LAZY = {name: "raysearch.cf.cf2label" for name in ("CF2Label", "CF2LabelConfig", "cf2label_study", "fit_cf2label",
                                                   "out_of_fold")}
_LAZY.update(AUCRow="raysearch.cf.evaluate", auc_table="raysearch.cf.evaluate")


__getattr__, __dir__ = lazy_api(__name__, _LAZY)


if TYPE_CHECKING:
    from raysearch.cf.cf2label import CF2Label, CF2LabelConfig, cf2label_study, fit_cf2label, out_of_fold
    from raysearch.cf.evaluate import AUCRow, auc_table

__all__ = [
    "AUCRow", "CF2Label", "CF2LabelConfig", "CF_MODELS", "CFError", "CFModel", "ItemVectors", "WEIGHTINGS",
    "auc_table", "cache_key", "cf2label_study", "compute_item_vectors", "create_cf_model", "fit_cf2label",
    "item_weights", "out_of_fold", "read_item_vectors", "register_cf_model",
]
