"""Item-level splits and label scarcity.

Val/test items stand for *new* images: their interactions never reach the CF
phase (``Split.cf_items``).  The label ratio hides the labels of a seeded
fraction of train items; those items still train the auxiliary task.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysearch.config import SplitConfig
from raysearch.data.format import Dataset, DatasetError


@dataclass(frozen=True)
class Split:
    train: np.ndarray      # item indices, sorted
    val: np.ndarray
    test: np.ndarray
    labelled: np.ndarray   # bool over all items: train items whose labels are kept (val/test: True)

    @property
    def cf_items(self) -> np.ndarray:
        """Items whose interactions the CF phase may see: train items only."""
        return self.train

    @property
    def train_labelled(self) -> np.ndarray:
        return self.train[self.labelled[self.train]]


def make_split(ds: Dataset, cfg: SplitConfig = SplitConfig()) -> Split:
    """Seeded item-level split keeping every label present in train where possible.

    Items are shuffled; then for each label (rarest first) with no train item,
    one of its items is moved into train from val/test (labels seen once stay put).  Items with no labels are
    allowed (they only serve the auxiliary task) but an all-unlabelled dataset is an error.
    """
    n = ds.n_items
    if n < 3:
        raise DatasetError(f"dataset {ds.name!r} has {n} items; a train/val/test split needs at least 3")
    y = ds.label_matrix
    if y.sum() == 0:
        raise DatasetError(f"dataset {ds.name!r} has no labels at all: nothing to learn")
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(n)
    n_val = max(1, int(round(cfg.val * n)))
    n_test = max(1, int(round(cfg.test * n)))
    n_train = n - n_val - n_test
    part = np.empty(n, dtype=np.int8)  # 0 train, 1 val, 2 test
    part[perm[:n_train]] = 0
    part[perm[n_train:n_train + n_val]] = 1
    part[perm[n_train + n_val:]] = 2
    counts = y.sum(0)
    for j in np.argsort(counts):
        if counts[j] < 2:
            continue  # a single-item label cannot be in train and evaluated; leave it
        members = np.flatnonzero(y[:, j] > 0)
        if (part[members] == 0).any():
            continue
        # move one member into train; sizes drift by at most one item per rare label
        part[members[rng.integers(len(members))]] = 0
    train = np.flatnonzero(part == 0)
    val = np.flatnonzero(part == 1)
    test = np.flatnonzero(part == 2)
    labelled = np.ones(n, dtype=bool)
    if cfg.label_ratio < 1.0:
        lrng = np.random.default_rng([cfg.seed, 1])
        k = max(1, int(round(cfg.label_ratio * len(train))))
        keep = lrng.choice(train, size=k, replace=False)
        labelled[train] = False
        labelled[keep] = True
    return Split(train=train, val=val, test=test, labelled=labelled)
