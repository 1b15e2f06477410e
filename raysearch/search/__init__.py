"""Stage 5: hyperparameter search (Ray Tune + Optuna + ASHA over :func:`raysearch.train.fit`).

``space`` turns a search-space YAML into an Optuna define-by-run function; ``tune`` runs the
sweep (start, resume, results); ``shared`` owns the sweep's data on the driver's node;
``trainables`` is what a trial runs (per-epoch checkpoints, the TorchTrainer path); ``cluster``
holds Ray start-up and resource checks; ``results`` defines stop reasons and the results frame;
``tracking`` logs trials to W&B from the driver.

The flat API is resolved lazily: a trial process (or a Ray Train worker) imports
``raysearch.search.trainables`` and asks the data owner for its data before pandas, the sweep
driver's code and the dataset readers are loaded, so those imports overlap the owner's work.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from raysearch._lazy import lazy_api

_API = {"SearchSpace": "raysearch.search.space", "load_space": "raysearch.search.space",
        "parse_space": "raysearch.search.space", "SweepConfig": "raysearch.search.tune",
        "SweepResult": "raysearch.search.tune", "run_sweep": "raysearch.search.tune"}
__all__ = sorted(_API)

__getattr__, __dir__ = lazy_api(__name__, _API)

if TYPE_CHECKING:
    from raysearch.search.space import SearchSpace, load_space, parse_space
    from raysearch.search.tune import SweepConfig, SweepResult, run_sweep
