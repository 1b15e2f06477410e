"""Phase two, the learning stage: fine-tune a backbone on labels (+ the CF auxiliary task).

``raysearch train`` runs :func:`fit` once; the search stage runs it per Ray Tune trial.
Modules, in the order a run uses them: :mod:`~raysearch.train.methods` (methods as stage
lists), :mod:`~raysearch.train.data` (everything a run reads, as one picklable
:class:`TrainingData`), :mod:`~raysearch.train.features` (cached frozen-trunk features),
:mod:`~raysearch.train.losses` (the paper's losses), then the loop itself:
:mod:`~raysearch.train.inputs` (batches to model inputs), :mod:`~raysearch.train.epoch` (one
training epoch: batch assembly, triplet sampling, loss composition, NaN check),
:mod:`~raysearch.train.evaluate` (prediction), :mod:`~raysearch.train.early_stopping` (best
state and patience) and :mod:`~raysearch.train.loop` (:func:`fit`, which ties them together).

The flat API is resolved lazily: the sweep driver reads :func:`data_keys` and :data:`METHODS`
without importing torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from raysearch._lazy import lazy_api

_API = {
    "METHODS": "raysearch.train.methods", "Method": "raysearch.train.methods", "Stage": "raysearch.train.methods",
    "TrainingData": "raysearch.train.data", "prepare_training_data": "raysearch.train.data",
    "aux_weighting": "raysearch.train.data", "data_keys": "raysearch.train.data",
    "shuffle_cf": "raysearch.train.data", "standardize_cf": "raysearch.train.data",
    "nearest_positive": "raysearch.train.epoch",
    "TrainResult": "raysearch.train.loop", "build_model": "raysearch.train.loop", "fit": "raysearch.train.loop",
    "load_checkpoint": "raysearch.train.loop",
}
__all__ = sorted(_API)


__getattr__, __dir__ = lazy_api(__name__, _API)


if TYPE_CHECKING:
    from raysearch.train.data import (TrainingData, aux_weighting, data_keys, prepare_training_data, shuffle_cf,
                                      standardize_cf)
    from raysearch.train.epoch import nearest_positive
    from raysearch.train.loop import TrainResult, build_model, fit, load_checkpoint
    from raysearch.train.methods import METHODS, Method, Stage
