"""Phase two, the learning stage: fine-tune a backbone on labels (+ the CF auxiliary task).

``raysearch train`` runs :func:`fit` once; the search stage runs it per Ray Tune trial.
Modules, in the order a run uses them: :mod:`~raysearch.train.methods` (methods as stage
lists), :mod:`~raysearch.train.data` (everything a run reads, as one picklable
:class:`TrainingData`), :mod:`~raysearch.train.features` (cached frozen-trunk features),
:mod:`~raysearch.train.losses` (the paper's losses), then the loop itself:
:mod:`~raysearch.train.epoch` (one training epoch), :mod:`~raysearch.train.evaluate`
(prediction), :mod:`~raysearch.train.early_stopping` (best state and patience) and
:mod:`~raysearch.train.loop` (:func:`fit`, which ties them together).
"""
from raysearch.train.loop import (
    TrainingData, TrainResult, aux_weighting, build_model, fit, load_checkpoint, nearest_positive,
    prepare_training_data, shuffle_cf, standardize_cf,
)
from raysearch.train.methods import METHODS, Method, Stage

__all__ = [
    "METHODS", "Method", "Stage", "TrainResult", "TrainingData", "aux_weighting", "build_model", "fit",
    "load_checkpoint", "nearest_positive", "prepare_training_data", "shuffle_cf", "standardize_cf",
]
