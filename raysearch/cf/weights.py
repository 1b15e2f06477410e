"""Per-item confidence weights for the auxiliary CF loss (paper Sec. 3.4).

Each scheme is a registered function ``(ds, split, iv, seed, cf2label) -> float32 (n_items,)``:

* ``uniform``: 1 for every item with a CF vector;
* ``interaction``: sqrt(|U_i|), more interacting users -> more trust in the vector;
* ``loss``: 1 / (mean BCE of CF2Label's prediction on the item's positive labels),
  the vector's measured utility for the labels (paper Sec. 3.4).  Out-of-fold (k-fold
  cross-fitting over the labelled train items that have a vector: ours; the paper does
  not say how CF2Label avoids scoring its own training items), so no item is weighted by
  a model that saw it.  Ours: divided by the median over the scored items (so the median
  scored item weighs 1.0, the fallback's weight) and clipped to [0.1, 10] (``LOSS_RANGE``):
  the raw 1/BCE ranged over five orders of magnitude.
* ``loss_rescaled``: the authors' code's post-processing of the same 1/BCE: clipped to
  its 25th-75th percentile over the scored items and rescaled linearly to [1, 3].

Items that cannot be scored (labels hidden by the label ratio, or no positive label):
the paper switches to the *uniform* scheme when labels are missing; the authors' code
gives items without a positive label the *minimum* weight.  ``loss`` (ours) gives them
1.0, the uniform scheme's weight (so under the default ``train.aux_norm: weight_sum``
their share is relative to the scored items' 1/BCE, typically > 1); ``loss_rescaled``
follows the code and gives them the minimum, 1.0 of [1, 3].  Both are counted and logged.

Every scheme gives 0 where ``iv.has_vector`` is False (val/test items and train
items without interactions; the latter are counted and logged).  The clip Omega
is applied in the loss, not here.  Weights are cached beside the vectors.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysearch import _io
from raysearch.cf.base import CFError
from raysearch.cf.vectors import ItemVectors, split_hash
from raysearch.registry import Registry

if TYPE_CHECKING:  # cf2label is a torch module: imported only by the schemes that fit it
    from raysearch.cf.cf2label import CF2LabelConfig
    from raysearch.data.format import Dataset
    from raysearch.data.splits import Split

log = logging.getLogger(__name__)

MIN_BCE = 1e-4  # floor of the loss-based denominator (finite before the relative clip below)
#: ``loss`` weights are relative to the median scored item and clipped to [1/LOSS_RANGE, LOSS_RANGE]
#: (ours): raw 1/BCE spans 0.1 to 1e4 (posters fold 0 at 10% labels: 0.11 to 2,923), so one item could
#: weigh thousands of times another and the fallback 1.0 meant nothing relative to the scored items
LOSS_RANGE = 10.0

WeightFn = Callable[["Dataset", "Split", ItemVectors, int, "CF2LabelConfig | None"], np.ndarray]
WEIGHTINGS: Registry[WeightFn] = Registry("weighting scheme")


def _base(ds: "Dataset", split: "Split", iv: ItemVectors) -> np.ndarray:
    if iv.n_items != ds.n_items:
        raise CFError(f"item vectors have {iv.n_items} rows, dataset {ds.name} has {ds.n_items} items")
    return np.zeros(ds.n_items, dtype=np.float32)


@WEIGHTINGS.register("uniform")
def uniform(ds, split, iv, seed=0, cf2label=None) -> np.ndarray:
    """Every CF vector counts the same."""
    w = _base(ds, split, iv)
    w[iv.has_vector] = 1.0
    return w


@WEIGHTINGS.register("interaction")
def interaction(ds, split, iv, seed=0, cf2label=None) -> np.ndarray:
    """sqrt(|U_i|): vectors of items more users interacted with are trusted more."""
    w = _base(ds, split, iv)
    w[iv.has_vector] = np.sqrt(iv.n_interactions[iv.has_vector].astype(np.float64))
    return w


@WEIGHTINGS.register("loss")
def loss(ds, split, iv, seed=0, cf2label=None) -> np.ndarray:
    """1 / out-of-fold mean BCE of CF2Label on the item's positive labels; 1.0 where not computable."""
    w = _base(ds, split, iv)
    from raysearch.cf.cf2label import cf2label_items

    w[iv.has_vector] = 1.0  # the fallback for items without visible positive labels
    items = cf2label_items(split, iv, ds)
    fallback = int(iv.has_vector[split.train].sum()) - len(items)
    hidden = int((iv.has_vector[split.train] & ~split.labelled[split.train]).sum())
    if fallback:
        log.info("loss weights: %d train items with a CF vector but hidden labels (%d) or no positive "
                 "label (%d) get the uniform weight 1.0", fallback, hidden, fallback - hidden)
    if len(items) == 0:
        log.warning("loss weights: no labelled train item has a CF vector; all weights are uniform")
        return w
    raw = _inverse_bce(ds, iv, items, seed, cf2label)
    w[items] = np.clip(raw / np.median(raw), 1.0 / LOSS_RANGE, LOSS_RANGE).astype(np.float32)
    return w


def weight_stats(scheme: str, split: "Split", has_vector: np.ndarray, w: np.ndarray, labels: np.ndarray | None = None
                 ) -> dict[str, float]:
    """What a report shows of one fold's weights: over the train items with a CF vector, the share
    that got the scheme's fallback (``loss``: hidden or no positive label), the range, the share at a
    clip bound."""
    train = split.train[has_vector[split.train]]
    out: dict[str, float] = {"items": float(len(train))}
    if not len(train):
        return out
    wt = np.asarray(w, dtype=np.float64)[train]
    out.update(min=float(wt.min()), max=float(wt.max()), median=float(np.median(wt)))
    if scheme == "loss" and labels is not None:
        y = np.asarray(labels)[train] > 0
        scored = split.labelled[train] & y.any(1)
        out["fallback_share"] = float(1 - scored.mean())
        out["clipped_share"] = float(np.isclose(wt[scored], LOSS_RANGE).mean() + np.isclose(wt[scored], 1 / LOSS_RANGE).mean()) if scored.any() else 0.0
    return out


def _inverse_bce(ds, iv: ItemVectors, items: np.ndarray, seed: int, cf2label: "CF2LabelConfig | None") -> np.ndarray:
    """1 / out-of-fold mean BCE of CF2Label on each item's positive labels (float64)."""
    from raysearch.cf.cf2label import CF2LabelConfig, out_of_fold

    cf2label = cf2label or CF2LabelConfig()
    x, y = iv.targets()[items], ds.label_matrix[items]
    probs, _, _ = out_of_fold(x, y, cf2label, seed=seed)
    p = np.clip(probs.astype(np.float64), 1e-7, 1.0)
    bce_pos = (-(y * np.log(p)).sum(1)) / y.sum(1)
    return 1.0 / np.maximum(bce_pos, MIN_BCE)


def rescale_authors(raw: np.ndarray, low_pct: float = 25.0, high_pct: float = 75.0,
                    lo: float = 1.0, hi: float = 3.0) -> np.ndarray:
    """The authors' post-processing: clip to the [low_pct, high_pct] percentiles, map linearly to
    [lo, hi].  All-equal inputs (no spread) map to ``lo``."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size == 0:
        return raw
    a, b = np.percentile(raw, [low_pct, high_pct])
    if b - a <= 0:
        return np.full(raw.shape, lo)
    return lo + (hi - lo) * (np.clip(raw, a, b) - a) / (b - a)


@WEIGHTINGS.register("loss_rescaled")
def loss_rescaled(ds, split, iv, seed=0, cf2label=None) -> np.ndarray:
    """``loss`` post-processed as in the authors' code: 1/BCE clipped to its 25th-75th percentile and
    rescaled to [1, 3]; items that cannot be scored get the minimum weight 1.0 (the code's choice)."""
    w = _base(ds, split, iv)
    from raysearch.cf.cf2label import cf2label_items

    w[iv.has_vector] = 1.0  # the minimum of [1, 3]
    items = cf2label_items(split, iv, ds)
    fallback = int(iv.has_vector[split.train].sum()) - len(items)
    if fallback:
        log.info("loss_rescaled weights: %d train items with a CF vector but hidden or no positive labels "
                 "get the minimum weight 1.0", fallback)
    if len(items) == 0:
        log.warning("loss_rescaled weights: no labelled train item has a CF vector; all weights are 1.0")
        return w
    w[items] = rescale_authors(_inverse_bce(ds, iv, items, seed, cf2label)).astype(np.float32)
    return w


def item_weights(scheme: str, ds: "Dataset", split: "Split", iv: ItemVectors, seed: int = 0, *,
                 cf2label: "CF2LabelConfig | None" = None, use_cache: bool = True) -> np.ndarray:
    """float32 (n_items,) weights of ``scheme``; 0 where there is no CF vector; Omega not applied.

    Cached beside the vectors' Parquet file (when ``iv`` came from the cache) under a key
    that adds the scheme, seed, CF2Label settings and which train items are labelled.
    """
    fn = WEIGHTINGS.get(scheme)
    if cf2label is None and scheme.startswith("loss"):
        from raysearch.cf.cf2label import CF2LabelConfig

        cf2label = CF2LabelConfig()
    if iv.info.get("train_items") not in (None, split_hash(split)):
        raise CFError(f"item vectors {iv.key} were computed for another split (train item set differs)")
    no_vec = int((~iv.has_vector[split.train]).sum())
    if no_vec:
        log.warning("%s weights: %d of %d train items have no interactions (no CF vector): weight 0",
                    scheme, no_vec, len(split.train))
    path = _weights_path(scheme, split, iv, seed, cf2label) if use_cache and iv.path is not None else None
    if path is not None and path.is_file():
        return _read_weights(path, ds)
    w = np.asarray(fn(ds, split, iv, seed, cf2label), dtype=np.float32)
    defined = iv.has_vector
    if not (np.isfinite(w).all() and (w[defined] > 0).all() and (w[~defined] == 0).all()):
        raise CFError(f"weighting {scheme!r} produced non-finite, non-positive or misplaced weights")
    if path is not None:
        _write_weights(path, ds, w, scheme)
    return w


def _weights_path(scheme: str, split: "Split", iv: ItemVectors, seed: int, cf2label: "CF2LabelConfig | None") -> Path:
    h = hashlib.sha256(json.dumps({
        # version 2 of loss: relative to the median scored item and clipped (LOSS_RANGE)
        "scheme": scheme, "version": 2 if scheme == "loss" else 1,
        "seed": seed, "cf2label": asdict(cf2label) if scheme.startswith("loss") else None,
        "labelled": hashlib.sha256(np.packbits(split.labelled).tobytes()).hexdigest() if scheme.startswith("loss") else None,
    }, sort_keys=True).encode()).hexdigest()[:12]
    return iv.path.with_name(f"{iv.key}.weights-{scheme}-{h}.parquet")


def _write_weights(path: Path, ds: "Dataset", w: np.ndarray, scheme: str) -> None:
    table = pa.table({"item_id": pa.array(list(ds.items["item_id"]), pa.string()), "weight": pa.array(w, pa.float32())})
    table = table.replace_schema_metadata({b"raysearch.weights": json.dumps({"scheme": scheme}).encode()})
    _io.write_parquet_atomic(table, path)


def _read_weights(path: Path, ds: "Dataset") -> np.ndarray:
    try:
        t = pq.read_table(path)
        ids, w = t.column("item_id").to_pylist(), t.column("weight").to_numpy()
    except (OSError, pa.ArrowInvalid, KeyError) as e:
        raise CFError(f"{path}: unreadable weights cache ({e}); delete it to recompute") from None
    if ids != list(ds.items["item_id"]):
        raise CFError(f"{path}: item ids do not match dataset {ds.name}; delete it to recompute")
    return np.asarray(w, dtype=np.float32)
