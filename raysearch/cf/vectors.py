"""Phase one of the method: item vectors from a Cornac model, cached as Parquet.

Why this shape: the search stage runs many trials that share one CF vector set, so
the vectors are computed once per (data, split, model, hyperparameters) and read
back from a Parquet file whose schema metadata records exactly what produced it.
:attr:`ItemVectors.from_cache` says which of the two happened.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysearch import _io, paths
from raysearch.cf.base import CFError, create_cf_model
from raysearch.cf.cornac_data import to_cornac
from raysearch.config import CFConfig, from_dict, to_dict
from raysearch.errors import short

if TYPE_CHECKING:
    from raysearch.data.format import Dataset
    from raysearch.data.splits import Split

log = logging.getLogger(__name__)

#: bump when a change of this module changes the vectors produced for an unchanged key
CACHE_VERSION = 1
_META_KEY = b"raysearch.cf"


@dataclass
class ItemVectors:
    """CF vectors aligned to dataset item indices (rows of ``ds.items``)."""

    vectors: np.ndarray          # float32 (n_items, dim); zeros where has_vector is False
    bias: np.ndarray | None      # float32 (n_items,) or None
    has_vector: np.ndarray       # bool (n_items,): train items with >= 1 train interaction
    n_interactions: np.ndarray   # int64 (n_items,): |U_i| from train interactions (0 elsewhere)
    config: CFConfig
    key: str
    item_ids: list[str] = field(default_factory=list)
    path: Path | None = None     # the Parquet cache file, when cached
    info: dict[str, Any] = field(default_factory=dict)  # fingerprint, fit time, counts ...
    from_cache: bool = False     # read back from a Parquet cache file, not fitted in this call

    @property
    def n_items(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def targets(self) -> np.ndarray:
        """What the CF head regresses: the vector, plus the bias as one extra column when present."""
        if self.bias is None:
            return self.vectors.astype(np.float32, copy=False)
        return np.concatenate([self.vectors, self.bias[:, None]], axis=1).astype(np.float32, copy=False)


def split_hash(split: "Split") -> str:
    return hashlib.sha256(np.ascontiguousarray(split.cf_items, dtype=np.int64).tobytes()).hexdigest()[:16]


def cache_key(ds: "Dataset", split: "Split", cfg: CFConfig) -> str:
    """Hash of everything the vectors depend on: data, the train item set, model and hyperparameters.

    The split enters through the exact train item set (a function of the split seed
    and fractions), so a change of either, or of the split code, is a miss.
    """
    payload = {
        "version": CACHE_VERSION,
        "fingerprint": ds.fingerprint,
        "train_items": split_hash(split),
        "cf": to_dict(cfg),
    }
    h = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    return f"{cfg.model}-{h}"


def cache_path(key: str, data_root: str | os.PathLike | None = None) -> Path:
    return paths.cache_dir("cf", data_root) / f"{key}.parquet"


def compute_item_vectors(
    ds: "Dataset", split: "Split", cfg: CFConfig, data_root: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> ItemVectors:
    """Train ``cfg.model`` on the train items' interactions only; cached as Parquet.

    Val/test items stand for new images: their columns are empty in the input and
    they get zero vectors with ``has_vector`` False, as do train items nobody
    interacted with (counted and logged).  ``from_cache`` on the result says whether
    Cornac ran (a cache miss) or the vectors were read back (a hit).
    """
    key = cache_key(ds, split, cfg)
    path = cache_path(key, data_root)
    _io.clean_stale(path.parent)  # temp files of killed writers
    if use_cache and path.is_file():
        iv = read_item_vectors(path, ds)
        log.info("cf cache hit %s", path)
        return iv
    model = create_cf_model(cfg)  # unknown model names fail before any work
    matrix = ds.interaction_matrix(split.cf_items)
    data = to_cornac(matrix, seed=cfg.seed, what=f"train-item interaction matrix of {ds.name!r}")
    n_int = np.zeros(ds.n_items, dtype=np.int64)
    n_int[split.cf_items] = np.asarray(matrix[:, split.cf_items].sum(axis=0)).ravel().astype(np.int64)
    no_inter = int((n_int[split.cf_items] == 0).sum())
    if no_inter:
        log.warning("%d of %d train items of %r have no interactions: no CF vector, weight 0",
                    no_inter, len(split.cf_items), ds.name)
    t0 = time.perf_counter()
    log.info("fitting %s on %d users x %d items (%d interactions)", cfg.model, data.n_users, data.n_items,
             data.train_set.num_ratings)
    model.fit(data)
    fit_s = time.perf_counter() - t0
    vec, bias = model.item_vectors()
    if not np.isfinite(vec).all() or (bias is not None and not np.isfinite(bias).all()):
        raise CFError(f"{cfg.model} produced non-finite item vectors (diverged?); try a smaller --lr")
    vectors = np.zeros((ds.n_items, vec.shape[1]), dtype=np.float32)
    vectors[data.items] = vec
    full_bias = None
    if bias is not None and cfg.bias:
        full_bias = np.zeros(ds.n_items, dtype=np.float32)
        full_bias[data.items] = bias
    has = np.zeros(ds.n_items, dtype=bool)
    has[data.items] = True
    info = {
        "fingerprint": ds.fingerprint, "dataset": ds.name, "train_items": split_hash(split),
        "n_train_items": int(len(split.cf_items)), "n_train_items_without_interactions": no_inter,
        "n_users": data.n_users, "n_interactions": int(data.train_set.num_ratings),
        "fit_seconds": round(fit_s, 3), "cache_version": CACHE_VERSION,
    }
    iv = ItemVectors(vectors=vectors, bias=full_bias, has_vector=has, n_interactions=n_int, config=cfg,
                     key=key, item_ids=list(ds.items["item_id"]), info=info)
    if use_cache:
        write_item_vectors(iv, path)
        iv.path = path
    return iv


# ----------------------------------------------------------------------------- Parquet cache

def write_item_vectors(iv: ItemVectors, path: Path) -> None:
    """Atomic write (temp file + rename): concurrent trials never read half a file."""
    table = pa.table({
        "item_id": pa.array(iv.item_ids, pa.string()),
        "vector": pa.array(list(iv.vectors), pa.list_(pa.float32())),
        "bias": pa.array(iv.bias if iv.bias is not None else [None] * iv.n_items, pa.float32()),
        "n_interactions": pa.array(iv.n_interactions, pa.int64()),
        "has_vector": pa.array(iv.has_vector, pa.bool_()),
    })
    meta = {"key": iv.key, "config": to_dict(iv.config), **iv.info}
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    _io.write_parquet_atomic(table, path)


def read_item_vectors(path: str | os.PathLike, ds: "Dataset | None" = None) -> ItemVectors:
    """Read a cache file; with ``ds``, check it belongs to that dataset and realign rows by item_id."""
    path = Path(path)
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[_META_KEY])
    except (OSError, pa.ArrowInvalid, KeyError, json.JSONDecodeError) as e:
        raise CFError(f"{path}: not a readable raysearch CF cache file ({e}); delete it to recompute") from None
    cfg = from_dict(CFConfig, meta["config"], where=str(path))
    ids = table.column("item_id").to_pylist()
    flat = table.column("vector").combine_chunks()
    vectors = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(ids), -1)
    bias_col = table.column("bias")
    bias = None if bias_col.null_count == len(ids) else np.asarray(bias_col.to_numpy(zero_copy_only=False), dtype=np.float32)
    n_int = np.asarray(table.column("n_interactions").to_numpy(), dtype=np.int64)
    has = np.asarray(table.column("has_vector").to_numpy(zero_copy_only=False), dtype=bool)
    if ds is not None:
        if meta.get("fingerprint") != ds.fingerprint:
            raise CFError(f"{path}: computed for dataset fingerprint {meta.get('fingerprint')}, "
                          f"not {ds.fingerprint} ({ds.name})")
        index = ds.item_index
        try:
            order = np.array([index[i] for i in ids], dtype=np.int64)
        except KeyError as e:
            raise CFError(f"{path}: unknown item_id {short(e.args[0])} for dataset {ds.name}") from None
        if len(order) != ds.n_items:
            raise CFError(f"{path}: {len(order)} rows, dataset {ds.name} has {ds.n_items} items")
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        vectors, n_int, has = vectors[inv], n_int[inv], has[inv]
        bias = None if bias is None else bias[inv]
        ids = list(ds.items["item_id"])
    info = {k: v for k, v in meta.items() if k not in ("key", "config")}
    return ItemVectors(vectors=vectors, bias=bias, has_vector=has, n_interactions=n_int, config=cfg,
                       key=meta["key"], item_ids=ids, path=path, info=info, from_cache=True)
