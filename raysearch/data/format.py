"""The canonical prepared-dataset folder, and the one loader every stage reads.

A prepared dataset is a folder::

    items.parquet         item_id: string, image: string (relative path), labels: list<string>
    interactions.parquet  user_id: string, item_id: string [, rating: double] [, timestamp: int64]
    meta.json             name, source, labels (vocabulary, fixed order), params, fingerprint
    manifest.json         size and mtime of every file above, and the fingerprint they had
    images/...            the image files named by ``items.image``

Loading validates: duplicate item ids, unknown item ids in interactions, image
paths escaping the folder, labels outside the vocabulary are errors naming the
offending rows.  The fingerprint is a content hash of the two tables, the
vocabulary and the image bytes, so every cache keyed by it is invalidated by any
change of data.  Files edited after ``prepare`` are caught on load: each load
compares sizes and mtimes with ``manifest.json`` (cheap) and rehashes the content
when they differ (``rehash=True`` forces it), so a cache can never serve rows of
different content.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from raysearch import _io
from raysearch.errors import RaysearchError, short

log = logging.getLogger(__name__)

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"

ITEMS_SCHEMA = pa.schema(
    [("item_id", pa.string()), ("image", pa.string()), ("labels", pa.list_(pa.string()))]
)


class DatasetError(RaysearchError, ValueError):
    """A dataset folder or table is malformed; the message names the file and rows."""


def _rows(idx: Iterable[int], limit: int = 5) -> str:
    idx = list(idx)
    shown = ", ".join(str(i) for i in idx[:limit])
    return shown + (f" ... ({len(idx)} rows)" if len(idx) > limit else "")


@dataclass
class Dataset:
    """A loaded, validated dataset. Row ``i`` of ``items`` is item index ``i`` everywhere."""

    root: Path
    meta: dict[str, Any]
    items: pd.DataFrame
    interactions: pd.DataFrame
    _extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {iid: i for i, iid in enumerate(self.items["item_id"])}

    @cached_property
    def label_matrix(self) -> np.ndarray:
        """(n_items, n_labels) float32 0/1 matrix in vocabulary order."""
        vocab = {l: j for j, l in enumerate(self.label_names)}
        y = np.zeros((self.n_items, len(vocab)), dtype=np.float32)
        for i, labels in enumerate(self.items["labels"]):
            for l in labels:
                y[i, vocab[l]] = 1.0
        return y

    @cached_property
    def interaction_item_idx(self) -> np.ndarray:
        """Item index of every interaction row (int64)."""
        return self.interactions["item_id"].map(self.item_index).to_numpy(dtype=np.int64)

    @cached_property
    def interaction_user_idx(self) -> tuple[np.ndarray, list[str]]:
        codes, uniques = pd.factorize(self.interactions["user_id"], sort=True)
        return codes.astype(np.int64), list(uniques)

    def n_interactions_per_item(self) -> np.ndarray:
        """|U_i|: distinct users per item (binary matrix semantics)."""
        m = self.interaction_matrix()
        return np.asarray((m > 0).sum(axis=0)).ravel().astype(np.int64)

    def interaction_matrix(self, items: np.ndarray | None = None) -> sp.csr_matrix:
        """Binary users x items CSR matrix, restricted to interactions of ``items`` (item indices).

        Columns always span all items so indices line up with ``items``; the
        interactions of items outside ``items`` are dropped (they stand for new images).
        """
        u, users = self.interaction_user_idx
        it = self.interaction_item_idx
        if items is not None:
            keep = np.zeros(self.n_items, dtype=bool)
            keep[np.asarray(items, dtype=np.int64)] = True
            mask = keep[it]
            u, it = u[mask], it[mask]
        m = sp.csr_matrix(
            (np.ones(len(u), dtype=np.float32), (u, it)), shape=(len(users), self.n_items)
        )
        m.data[:] = 1.0  # duplicates summed by the constructor: binarise
        return m

    def image_path(self, i: int) -> Path:
        return self.root / self.items["image"].iat[i]


# ----------------------------------------------------------------------------- writing

def fingerprint_tables(
    items: pd.DataFrame, interactions: pd.DataFrame, labels: Sequence[str], root: Path | None = None
) -> str:
    """Content hash of the tables, the vocabulary and (when ``root`` is given) the image bytes.

    Image bytes count because caches keyed by the fingerprint (decoded images,
    frozen-trunk features) must go stale when an image file is replaced.
    """
    h = hashlib.sha256()
    if root is not None:
        for rel in items["image"]:
            f = Path(root) / rel
            h.update(f.read_bytes() if f.is_file() else b"\0missing")
    h.update(json.dumps(list(labels)).encode())
    h.update(pd.util.hash_pandas_object(items[["item_id", "image"]], index=False).to_numpy().tobytes())
    h.update("\x1f".join("\x1e".join(l) for l in items["labels"]).encode())
    cols = [c for c in ("user_id", "item_id", "rating", "timestamp") if c in interactions.columns]
    h.update(pd.util.hash_pandas_object(interactions[cols], index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def write_dataset(
    root: str | Path,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    *,
    name: str,
    source: str,
    labels: Sequence[str] | None = None,
    params: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
) -> Path:
    """Write the canonical folder (images must already be under ``root``).

    ``labels`` fixes the vocabulary order; by default labels are sorted by
    descending frequency then name, so label 0 is the most common class.
    ``report`` (kept/skipped counts from an adapter) is stored in meta.json.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    items = items[["item_id", "image", "labels"]].copy()
    items["item_id"] = items["item_id"].astype(str)
    items["labels"] = [list(map(str, l)) for l in items["labels"]]
    inter = interactions.copy()
    inter["user_id"] = inter["user_id"].astype(str)
    inter["item_id"] = inter["item_id"].astype(str)
    if labels is None:
        counts = pd.Series([l for ls in items["labels"] for l in ls]).value_counts()
        labels = sorted(counts.index, key=lambda l: (-counts[l], l))
    labels = list(labels)
    _write_table(pa.Table.from_pandas(items, schema=ITEMS_SCHEMA, preserve_index=False), root / ITEMS_FILE)
    fields = [("user_id", pa.string()), ("item_id", pa.string())]
    if "rating" in inter.columns:
        fields.append(("rating", pa.float64()))
    if "timestamp" in inter.columns:
        fields.append(("timestamp", pa.int64()))
    inter = inter[[f for f, _ in fields]]
    _write_table(pa.Table.from_pandas(inter, schema=pa.schema(fields), preserve_index=False), root / INTERACTIONS_FILE)
    meta = {
        "name": name,
        "source": source,
        "labels": labels,
        "params": params or {},
        "report": report or {},
        "fingerprint": fingerprint_tables(items, inter, labels, root),
        "format_version": 1,
    }
    _io.write_json(root / META_FILE, meta)
    write_manifest(root, items, meta["fingerprint"])
    return root


def _write_table(table: pa.Table, path: Path) -> None:
    """``pq.write_table``; a full disk, quota or file-size limit is one line naming ``path`` (pyarrow's
    own message names no file)."""
    try:
        pq.write_table(table, path)
    except OSError as e:
        err = _io.write_error(path, e)
        if err is None:
            raise
        raise err from None


# ----------------------------------------------------------------------------- manifest

def _manifest_files(root: Path, items: pd.DataFrame) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` of the tables, meta.json and every image."""
    out: dict[str, list[int]] = {}
    for rel in (ITEMS_FILE, INTERACTIONS_FILE, META_FILE, *items["image"]):
        try:
            st = os.stat(root / rel)
        except OSError:
            out[rel] = [-1, -1]
        else:
            out[rel] = [st.st_size, st.st_mtime_ns]
    return out


def write_manifest(root: Path, items: pd.DataFrame, fingerprint: str) -> None:
    _io.write_json(root / MANIFEST_FILE, {"fingerprint": fingerprint, "files": _manifest_files(root, items)})


def _manifest_fingerprint(root: Path) -> str | None:
    """The fingerprint recorded with the manifest, if every file still has its recorded size and mtime."""
    try:
        man = json.loads((root / MANIFEST_FILE).read_text())
        files = man["files"]
        for rel, (size, mtime) in files.items():
            st = os.stat(root / rel)
            if st.st_size != size or st.st_mtime_ns != mtime:
                log.info("%s: %s changed since the manifest was written", root, rel)
                return None
        return str(man["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _current_fingerprint(root: Path, items: pd.DataFrame, inter: pd.DataFrame, meta: dict, rehash: bool) -> str:
    """The content fingerprint: the manifest's when nothing changed, else a rehash (recorded again)."""
    if not rehash:
        fp = _manifest_fingerprint(root)
        if fp is not None and fp == meta["fingerprint"]:
            return fp
    fp = fingerprint_tables(items, inter, meta["labels"], root)
    if fp != meta["fingerprint"]:
        log.warning("dataset %s changed since it was prepared (fingerprint %s -> %s): caches of the old "
                    "content will not be used", root, meta["fingerprint"], fp)
    try:
        if fp != meta["fingerprint"]:
            _io.write_json(root / META_FILE, {**meta, "fingerprint": fp})
        write_manifest(root, items, fp)
    except OSError as e:  # a read-only folder: the fingerprint is still right for this load
        log.info("%s: cannot record the new fingerprint (%s)", root, e)
    return fp


# ----------------------------------------------------------------------------- loading

def load_folder(root: str | Path, *, check_images: bool = False, rehash: bool = False) -> Dataset:
    """Load and validate a canonical dataset folder.

    The fingerprint is that of the content on disk now: files changed since the
    manifest was written are rehashed (``rehash=True``: always), see the module docstring.
    """
    root = Path(root)
    for f in (ITEMS_FILE, INTERACTIONS_FILE, META_FILE):
        if not (root / f).is_file():
            raise DatasetError(f"{root}: missing {f} (is this a prepared raysearch dataset?)")
    meta = read_meta(root / META_FILE)
    items = _read_table(root / ITEMS_FILE)
    inter = _read_table(root / INTERACTIONS_FILE)
    validate(root, items, inter, meta, check_images=check_images)
    items["labels"] = [list(l) for l in items["labels"]]
    items, inter = items.reset_index(drop=True), inter.reset_index(drop=True)
    meta["fingerprint"] = _current_fingerprint(root, items, inter, meta, rehash)
    return Dataset(root=root, meta=meta, items=items, interactions=inter)


def read_meta(path: Path) -> dict[str, Any]:
    """meta.json, checked: an object with a name, a fingerprint and a list of distinct label names."""
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 JSON text (byte {e.start}); is this a raysearch meta.json?") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: top level must be a JSON object, got {type(meta).__name__}")
    for k in ("name", "labels", "fingerprint"):
        if k not in meta:
            raise DatasetError(f"{path}: missing key {k!r}")
    labels = meta["labels"]
    if not isinstance(labels, list) or not all(isinstance(l, str) for l in labels):
        raise DatasetError(f"{path}: key 'labels' must be a list of label names, got {short(labels)}")
    seen: set[str] = set()
    for j, l in enumerate(labels):
        if l in seen:
            raise DatasetError(f"{path}: label {short(l)} is listed twice in 'labels' (second at index {j})")
        seen.add(l)
    if not isinstance(meta["fingerprint"], str):
        raise DatasetError(f"{path}: key 'fingerprint' must be a string, got {short(meta['fingerprint'])}")
    return meta


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: not a readable Parquet table ({short(str(e))})") from None


def validate(root: Path, items: pd.DataFrame, inter: pd.DataFrame, meta: dict, *, check_images: bool = False) -> None:
    f_items, f_inter = root / ITEMS_FILE, root / INTERACTIONS_FILE
    for col in ("item_id", "image", "labels"):
        if col not in items.columns:
            raise DatasetError(f"{f_items}: missing column {col!r}")
    for col in ("user_id", "item_id"):
        if col not in inter.columns:
            raise DatasetError(f"{f_inter}: missing column {col!r}")
    if items["item_id"].isna().any():
        raise DatasetError(f"{f_items}: null item_id in rows {_rows(np.flatnonzero(items['item_id'].isna()))}")
    dup = items["item_id"].duplicated(keep=False)
    if dup.any():
        ids = items.loc[dup, "item_id"].unique()[:5].tolist()
        raise DatasetError(f"{f_items}: duplicate item_id {short(ids)} in rows {_rows(np.flatnonzero(dup))}")
    null_img = [i for i, p in enumerate(items["image"]) if not isinstance(p, str) or not p]
    if null_img:
        raise DatasetError(f"{f_items}: null or empty image path in rows {_rows(null_img)}")
    bad = [
        i for i, p in enumerate(items["image"])
        if PurePosixPath(p).is_absolute() or ".." in PurePosixPath(p).parts or Path(p).is_absolute()
    ]
    if bad:
        raise DatasetError(
            f"{f_items}: image path escapes the dataset folder (absolute or '..') in rows {_rows(bad)}: "
            f"{short(items['image'].iat[bad[0]])}"
        )
    vocab = set(meta["labels"])
    null = [i for i, ls in enumerate(items["labels"]) if ls is None]
    if null:
        raise DatasetError(f"{f_items}: null labels (use an empty list for an unlabelled item) in rows {_rows(null)}")
    not_list = [i for i, ls in enumerate(items["labels"]) if isinstance(ls, (str, bytes)) or not hasattr(ls, "__iter__")]
    if not_list:
        raise DatasetError(f"{f_items}: labels must be a list of label names in rows {_rows(not_list)}")
    unknown = [i for i, ls in enumerate(items["labels"]) if any(l not in vocab for l in ls)]
    if unknown:
        raise DatasetError(f"{f_items}: labels outside meta.json's vocabulary in rows {_rows(unknown)}")
    known = set(items["item_id"])
    miss = ~inter["item_id"].isin(known)
    if miss.any():
        ids = inter.loc[miss, "item_id"].unique()[:5].tolist()
        raise DatasetError(f"{f_inter}: unknown item_id {short(ids)} in rows {_rows(np.flatnonzero(miss))}")
    if inter["user_id"].isna().any():
        raise DatasetError(f"{f_inter}: null user_id in rows {_rows(np.flatnonzero(inter['user_id'].isna()))}")
    if check_images:
        missing = [i for i, p in enumerate(items["image"]) if not (root / p).is_file()]
        if missing:
            raise DatasetError(f"{f_items}: image file missing for rows {_rows(missing)}: {short(items['image'].iat[missing[0]])}")


# ----------------------------------------------------------------------------- stats

def gini(counts: np.ndarray) -> float:
    """Gini index of class sizes (0 = all classes equal, -> 1 = concentrated)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


def dataset_stats(ds: Dataset) -> dict[str, Any]:
    """The paper's Table 2 row for a dataset."""
    y = ds.label_matrix
    n_users = ds.interactions["user_id"].nunique()
    n_inter = len(ds.interactions)
    return {
        "name": ds.name,
        "images": ds.n_items,
        "interactions": n_inter,
        "users": int(n_users),
        "sparsity": float(n_inter / max(1, n_users * ds.n_items)),
        "labels": len(ds.label_names),
        "avg_pos_labels": float(y.sum(1).mean()) if ds.n_items else 0.0,
        "gini": gini(y.sum(0)),
        "fingerprint": ds.fingerprint,
    }
