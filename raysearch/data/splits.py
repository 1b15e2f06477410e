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

    ``cfg.folds > 0``: fold ``cfg.fold`` of the K-fold (:func:`make_fold_split`), so one
    ``RunConfig`` names an experiment unit's split and the sweep's trainable and data owner serve
    it like any other run; ``cfg.inner``: that fold with its test items removed (nested tuning).

    Items are shuffled; then for each label (rarest first) with no train item,
    one of its items is moved into train from val/test (labels seen once stay put).  Items with no labels are
    allowed (they only serve the auxiliary task) but an all-unlabelled dataset is an error.
    """
    if cfg.folds:
        split = make_fold_split(ds, cfg.folds, cfg.fold, seed=cfg.seed, val=cfg.val,
                                label_ratio=cfg.label_ratio, label_seed=cfg.label_seed)
        return inner_split(split) if cfg.inner else split
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


def kfold_assignment(ds: Dataset, k: int, seed: int = 0) -> np.ndarray:
    """int64 fold id (0..k-1) per item: every item is in exactly one fold, seeded.

    Multi-label stratified greedily (labels rarest first; each item goes to the fold with the
    fewest positives of that label so far, then the fewest items), so a rare label is spread
    over the folds instead of landing in one test fold; unlabelled items fill the smallest folds.
    """
    n = ds.n_items
    if not 2 <= k <= n:
        raise DatasetError(f"k-fold needs 2 <= folds <= {n} items of {ds.name!r}, got folds={k}")
    y = ds.label_matrix > 0
    rng = np.random.default_rng([seed, 7])
    fold = np.full(n, -1, dtype=np.int64)
    sizes = np.zeros(k, dtype=np.int64)
    tiebreak = rng.random(k)
    for j in np.argsort(y.sum(0), kind="stable"):
        members = np.flatnonzero(y[:, j] & (fold < 0))
        rng.shuffle(members)
        per_fold = np.bincount(fold[y[:, j] & (fold >= 0)], minlength=k)
        for i in members:
            f = int(np.lexsort((tiebreak, sizes, per_fold))[0])
            fold[i] = f
            per_fold[f] += 1
            sizes[f] += 1
    rest = np.flatnonzero(fold < 0)
    rng.shuffle(rest)
    for i in rest:
        f = int(np.lexsort((tiebreak, sizes))[0])
        fold[i] = f
        sizes[f] += 1
    return fold


def make_fold_split(ds: Dataset, folds: int, fold: int, *, seed: int = 0, val: float = 0.15,
                    label_ratio: float = 1.0, label_seed: int = 0,
                    assignment: np.ndarray | None = None) -> Split:
    """Cross-validation fold ``fold`` of ``folds``: test = that fold; val = a seeded ``val`` fraction
    of all items carved from the *other* folds; train = the rest (the only items CF sees).

    The label mask keeps a seeded fraction ``label_ratio`` of the train items' labels, drawn from
    one permutation per (split seed, fold, ``label_seed``), so masks are nested across ratios
    (the 0.1 labels are a subset of the 0.5 labels) and identical for every method compared.
    """
    if not 0 <= fold < folds:
        raise DatasetError(f"fold {fold} out of range for {folds} folds")
    if not 0 < label_ratio <= 1:
        raise DatasetError(f"label ratio must be in (0, 1], got {label_ratio}")
    a = kfold_assignment(ds, folds, seed) if assignment is None else np.asarray(assignment)
    if len(a) != ds.n_items:
        raise DatasetError(f"fold assignment has {len(a)} entries, dataset {ds.name!r} has {ds.n_items} items")
    test = np.flatnonzero(a == fold)
    rest = np.flatnonzero(a != fold)
    n_val = max(1, int(round(val * ds.n_items)))
    if n_val >= len(rest):
        raise DatasetError(f"val fraction {val} leaves no train items in fold {fold} of {folds}")
    vrng = np.random.default_rng([seed, fold, 2])
    val_items = np.sort(vrng.choice(rest, size=n_val, replace=False))
    train = np.setdiff1d(rest, val_items)
    labelled = np.ones(ds.n_items, dtype=bool)
    if label_ratio < 1.0:
        order = np.random.default_rng([seed, fold, label_seed, 1]).permutation(train)
        keep = order[:max(1, int(round(label_ratio * len(train))))]
        labelled[train] = False
        labelled[keep] = True
    return Split(train=train, val=val_items, test=test, labelled=labelled)


def inner_split(outer: Split) -> Split:
    """The nested search's view of an outer fold: the same train items, label mask and val items,
    and *no* outer test item anywhere (its "test" is the val set: inner trials are judged and
    compared on val only, and the test fold stays unseen until the chosen configuration is scored)."""
    return Split(train=outer.train, val=outer.val, test=outer.val.copy(), labelled=outer.labelled)
