"""Cornac input straight from our sparse matrices: a Cornac ``Dataset`` and UIR triplets.

Why here: both the vector cache (:mod:`raysearch.cf.vectors`) and the AUC table
(:mod:`raysearch.cf.evaluate`) feed Cornac the same train-item matrix, and both must
drop empty users/items the same way.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from raysearch.cf.base import CFError


@dataclass(frozen=True)
class CornacData:
    """A Cornac ``Dataset`` built straight from a CSR matrix, plus the maps back to our indices.

    Empty users and item columns are dropped first: Cornac indexes only what it is
    given, and val/test items (all-empty columns here) must not get vectors.
    """

    train_set: Any            # cornac.data.Dataset
    users: np.ndarray         # cornac user index -> row of the input matrix
    items: np.ndarray         # cornac item index -> dataset item index (column of the input matrix)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)


def nonempty(matrix: sp.spmatrix, what: str = "interaction matrix") -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Binary CSR restricted to non-empty rows/columns, with the kept row and column indices."""
    m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    if m.nnz == 0:
        raise CFError(f"{what} is empty ({m.shape[0]} users x {m.shape[1]} items, 0 interactions): "
                      "nothing to train a CF model on")
    m.data[:] = 1.0
    rows = np.flatnonzero(np.diff(m.indptr))
    cols = np.flatnonzero(np.bincount(m.indices, minlength=m.shape[1]))
    m = m[rows][:, cols].tocsr()
    m.sort_indices()
    return m, rows, cols


def to_cornac(matrix: sp.spmatrix, seed: int = 0, what: str = "interaction matrix") -> CornacData:
    """Wrap a users x items matrix as a Cornac ``Dataset`` without leaving sparse form.

    ``cornac.data.Dataset.build`` walks Python tuples (minutes and GBs at 10M
    interactions); its constructor takes the (user, item, rating) arrays directly,
    which is what we give it.
    """
    from cornac.data import Dataset as CornacDataset

    m, rows, cols = nonempty(matrix, what)
    coo = m.tocoo()
    uid_map = OrderedDict((str(r), k) for k, r in enumerate(rows))
    iid_map = OrderedDict((str(c), k) for k, c in enumerate(cols))
    uir = (coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64))
    train_set = CornacDataset(len(rows), len(cols), uid_map, iid_map, uir, seed=seed)
    return CornacData(train_set=train_set, users=rows, items=cols)


def triplets(matrix: sp.spmatrix, what: str = "interaction matrix") -> list[tuple[str, str, float]]:
    """(user, item, 1.0) triplets for Cornac's eval methods (``RatioSplit`` wants UIR data)."""
    m, rows, cols = nonempty(matrix, what)
    coo = m.tocoo()
    return [(str(rows[u]), str(cols[i]), 1.0) for u, i in zip(coo.row.tolist(), coo.col.tolist())]
