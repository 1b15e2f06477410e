"""What a run reads, gathered once: :class:`TrainingData` (numpy only, picklable, shared between
trials through the Ray object store) and :func:`prepare_training_data`, which builds it.

:func:`data_keys` sits beside them because it names exactly the config fields they read: the
sweep's data owner keys its object-store copies on it, so two trials that differ only in
training hyperparameters share one copy.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from raysearch.config import ConfigError, RunConfig, to_dict
from raysearch.data.splits import Split
from raysearch.train.methods import METHODS


@dataclass
class TrainingData:
    """Everything :func:`fit` reads, aligned to dataset item indices (row i = item i)."""

    images: np.ndarray            # uint8 (N, S, S, 3), may be a read-only memmap
    labels: np.ndarray            # float32 (N, L)
    label_names: list[str]
    split: Split
    cf_targets: np.ndarray | None  # float32 (N, D) or None (image_only)
    has_cf: np.ndarray            # bool (N,): train items with a CF vector
    weights: np.ndarray           # float32 (N,): per-item CF confidence (0 without a vector)
    n_interactions: np.ndarray    # int64 (N,): train-matrix interactions per item
    dataset: str
    fingerprint: str

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"TrainingData.images must be uint8 (N, S, S, 3), got {self.images.dtype} {self.images.shape}")
        checks = {"labels": self.labels, "has_cf": self.has_cf, "weights": self.weights,
                  "n_interactions": self.n_interactions, "split.labelled": self.split.labelled}
        if self.cf_targets is not None:
            checks["cf_targets"] = self.cf_targets
        for k, v in checks.items():
            if len(v) != n:
                raise ValueError(f"TrainingData.{k} has {len(v)} rows but images has {n}")
        if self.labels.shape[1] != len(self.label_names):
            raise ValueError(f"TrainingData.labels has {self.labels.shape[1]} columns but {len(self.label_names)} label names")
        if self.cf_targets is not None and not np.isfinite(self.cf_targets[self.has_cf]).all():
            bad = np.flatnonzero(~np.isfinite(self.cf_targets).all(1) & self.has_cf)[:5].tolist()
            raise ValueError(f"TrainingData.cf_targets has non-finite values for items {bad}")


def aux_weighting(run: RunConfig) -> str | None:
    """The weighting scheme ``prepare_training_data`` really uses: None without CF; only
    ``mtl``/``sequential`` weight the reconstruction loss, the others use ``uniform``.
    Shared-data caches key on this, not on the sampled ``train.weighting``."""
    method = METHODS.get(run.train.method)
    if not method.uses_cf:
        return None
    return run.train.weighting if method.weighted else "uniform"


def prepare_training_data(run: RunConfig, data_root: str | os.PathLike | None = None,
                          split: Split | None = None) -> TrainingData:
    """Dataset -> split -> image cache (+ CF vectors and per-item weights unless ``image_only``).

    With ``train.cf_standardize`` (default) each CF target dimension is z-scored over the train
    items that have a vector (mean 0, std 1; items without one are left at 0 and never read).
    Why: raw Cornac factors are small and model-dependent (VAECF means have per-dim std ~0.1,
    BPR's differ), so exp(L1 + L2) with per-dimension means stays near exp(0) and its gradient
    is weak, and ``alpha`` would mean different things for different CF models.  The transform
    is affine per dimension, so it keeps all the information the vectors carry.
    ``split`` (e.g. one cross-validation fold) replaces ``make_split(ds, run.split)``; the CF
    vectors and weights are then computed from that split's train items only.
    """
    from raysearch.data.images import load_image_cache
    from raysearch.data.registry import load_dataset
    from raysearch.data.splits import make_split

    root = data_root if data_root is not None else run.data_root
    method = METHODS.get(run.train.method)
    ds = load_dataset(run.dataset, root)
    split = make_split(ds, run.split) if split is None else split
    images = load_image_cache(ds, run.train.image_size, data_root=root)
    n = ds.n_items
    n_inter = np.asarray(ds.interaction_matrix(split.cf_items).sum(0)).ravel().astype(np.int64)
    cf_targets, has_cf, weights = None, np.zeros(n, dtype=bool), np.zeros(n, dtype=np.float32)
    if method.uses_cf:
        from raysearch.cf import compute_item_vectors, item_weights

        iv = compute_item_vectors(ds, split, run.cf, data_root=root)
        cf_targets = np.asarray(iv.targets(), dtype=np.float32)
        has_cf = np.asarray(iv.has_vector, dtype=bool)
        if run.train.cf_standardize:
            cf_targets = standardize_cf(cf_targets, has_cf)
        weights = np.asarray(item_weights(aux_weighting(run), ds, split, iv, seed=run.split.seed), dtype=np.float32)
    data = TrainingData(
        images=images, labels=ds.label_matrix.astype(np.float32), label_names=ds.label_names, split=split,
        cf_targets=cf_targets, has_cf=has_cf, weights=weights, n_interactions=n_inter,
        dataset=ds.name, fingerprint=ds.fingerprint,
    )
    if run.train.shuffle_cf:
        if cf_targets is None:
            raise ConfigError(f"train.shuffle_cf: method {run.train.method!r} has no CF targets to shuffle")
        data = shuffle_cf(data, seed=shuffle_seed(run))
    return data


def shuffle_seed(run: RunConfig) -> int:
    """The permutation of a shuffled-CF control: a function of the split only (fold, label mask),
    so every arm shuffled on one unit gets the same permutation."""
    s = run.split
    return 10_000 + 1_000 * s.seed + 100 * s.fold + s.label_seed


def standardize_cf(cf_targets: np.ndarray, has_cf: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-dimension z-score over the rows with a CF vector (float32; other rows set to 0).

    ``weights`` (the loss's clipped item weights): the mean and sd are the weighted ones, so the
    targets are centred and scaled for the distribution of items the loss actually sees (see
    :func:`loss_standardized`); ``None`` or equal weights give the plain z-score."""
    out = np.zeros(cf_targets.shape, dtype=np.float32)
    if not has_cf.any():
        return out
    x = np.asarray(cf_targets[has_cf], dtype=np.float64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[has_cf]
    mean = np.average(x, axis=0, weights=w)
    sd = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    out[has_cf] = ((x - mean) / np.where(sd > 1e-8, sd, 1.0)).astype(np.float32)
    return out


def loss_standardized(cf_targets: np.ndarray, has_cf: np.ndarray, weights: np.ndarray, omega: float) -> np.ndarray:
    """CF targets z-scored under the auxiliary loss's own item weights min(w_i, Omega) (ours).

    Why: under ``interaction`` weights the loss sees mostly popular items, and their targets are
    the most extreme of the uniformly z-scored ones (larger RMS, bias column far above its mean),
    so exp(L1 + L2) starts far from its minimum for exactly the items that weigh most, the first steps
    overshoot and the loss spikes, its gradient flooding the shared trunk.  Standardising with the same weights the loss uses
    gives every scheme targets of weighted mean 0 and sd 1; it is the identity for ``uniform``
    (equal weights) and affine per dimension, so no information is lost."""
    w = np.minimum(np.asarray(weights, dtype=np.float64), omega)
    if not has_cf.any() or np.ptp(w[has_cf]) == 0:
        return np.asarray(cf_targets, dtype=np.float32)
    return standardize_cf(cf_targets, has_cf, w)


def shuffle_cf(data: TrainingData, seed: int = 0) -> TrainingData:
    """Negative control: permute CF targets (and their weights) across the train items that have
    one, breaking the item <-> CF-vector link while keeping the target distribution.  A gain of
    ``mtl`` over ``image_only`` that survives this shuffle would not come from CF information."""
    if data.cf_targets is None:
        raise ValueError("shuffle_cf: TrainingData has no CF targets")
    items = np.flatnonzero(data.has_cf)
    perm = np.random.default_rng(seed).permutation(items)
    cf = np.array(data.cf_targets, copy=True)
    w = np.array(data.weights, copy=True)
    cf[items], w[items] = data.cf_targets[perm], data.weights[perm]
    return dataclasses.replace(data, cf_targets=cf, weights=w)


def config_key(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def data_keys(run: RunConfig) -> tuple[str, str]:
    """(images key, per-config key): every config field :func:`prepare_training_data` reads.
    ``image_only`` needs no CF, so all its trials share one key."""
    img = {"dataset": run.dataset, "data_root": run.data_root, "image_size": run.train.image_size}
    scheme = aux_weighting(run)
    needs_cf = scheme is not None
    parts = {**img, "split": to_dict(run.split),
             "cf": to_dict(run.cf) if needs_cf else None,
             "weighting": scheme,
             "cf_standardize": run.train.cf_standardize if needs_cf else None,
             "shuffle_cf": run.train.shuffle_cf if needs_cf else None}
    return config_key(img), config_key(parts)
