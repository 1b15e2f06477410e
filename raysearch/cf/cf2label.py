"""CF2Label (paper Sec. 4.2): a 2-layer MLP predicting an item's labels from its CF vector alone.

Two uses: the pre-study (does the CF vector carry label information? its mAP vs a
popularity baseline, paper Table 4) and the loss-based item weights (how well an
item's own vector predicts its positive labels).  Both are computed out-of-fold:
CF vectors exist only for train items, so the model is evaluated by k-fold
cross-fitting over the labelled train items that have a vector, and every
item's prediction comes from a model that never saw that item.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from raysearch.cf.base import CFError
from raysearch.cf.vectors import ItemVectors

if TYPE_CHECKING:
    from raysearch.data.format import Dataset
    from raysearch.data.splits import Split


@dataclass(frozen=True)
class CF2LabelConfig:
    hidden: int = 128
    epochs: int = 300         # full-batch Adam steps (train sets are small: thousands of items)
    lr: float = 3e-3
    weight_decay: float = 1e-3
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden <= 0 or self.epochs <= 0 or self.lr <= 0 or self.folds < 2:
            raise CFError("cf2label: hidden, epochs, lr must be positive and folds >= 2")


class CF2Label(nn.Module):
    """Linear -> ReLU -> Linear, one logit per class; inputs standardised with the training fold's stats."""

    def __init__(self, d_in: int, n_labels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, n_labels))
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def fit_cf2label(x: np.ndarray, y: np.ndarray, cfg: CF2LabelConfig = CF2LabelConfig(), seed: int = 0) -> CF2Label:
    """Per-class BCE, full batch (deterministic given ``seed``)."""
    g = torch.Generator().manual_seed(int(seed))
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        model = CF2Label(xt.shape[1], yt.shape[1], cfg.hidden)
    model.mean.copy_(xt.mean(0))
    model.std.copy_(xt.std(0, unbiased=False).clamp_min(1e-6))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(cfg.epochs):
        opt.zero_grad()
        loss = loss_fn(model(xt), yt)
        if not torch.isfinite(loss):
            raise CFError(f"cf2label: non-finite training loss ({loss.item()}); lower the learning rate")
        loss.backward()
        opt.step()
    model.eval()
    return model


def predict(model: CF2Label, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.as_tensor(x, dtype=torch.float32))).numpy()


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Seeded assignment of ``n`` items to ``min(folds, n)`` folds of near-equal size."""
    if n < 2:
        raise CFError(f"cf2label: cross-fitting needs at least 2 labelled items with a CF vector, got {n}")
    k = min(folds, n)
    perm = np.random.default_rng([seed, 17]).permutation(n)
    ids = np.empty(n, dtype=np.int64)
    ids[perm] = np.arange(n) % k
    return ids


def out_of_fold(x: np.ndarray, y: np.ndarray, cfg: CF2LabelConfig = CF2LabelConfig(), seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CF2Label probabilities, popularity scores, fold ids), each row predicted by a model not trained on it.

    The popularity baseline of a row is the class frequency in that row's training folds
    (always predicting the most popular categories, paper Table 4).
    """
    ids = fold_ids(len(x), cfg.folds, seed)
    probs = np.zeros(y.shape, dtype=np.float32)
    pop = np.zeros(y.shape, dtype=np.float32)
    for f in np.unique(ids):
        tr, te = ids != f, ids == f
        model = fit_cf2label(x[tr], y[tr], cfg, seed=seed * 1000 + int(f))
        probs[te] = predict(model, x[te])
        pop[te] = y[tr].mean(0)
    return probs, pop, ids


def _map(y_true: np.ndarray, y_score: np.ndarray) -> float:
    from raysearch.metrics import mean_average_precision  # macro AP over classes with >= 1 positive

    return float(mean_average_precision(y_true, y_score))


def cf2label_items(split: "Split", iv: ItemVectors, ds: "Dataset") -> np.ndarray:
    """Train items CF2Label can use: labels visible, >= 1 positive label, a CF vector."""
    tr = split.train_labelled
    y = ds.label_matrix
    return tr[iv.has_vector[tr] & (y[tr].sum(1) > 0)]


def cf2label_study(ds: "Dataset", split: "Split", iv: ItemVectors, cfg: CF2LabelConfig = CF2LabelConfig()
                   ) -> dict:
    """Out-of-fold mAP of CF2Label next to the popularity baseline over labelled train items."""
    items = cf2label_items(split, iv, ds)
    x, y = iv.targets()[items], ds.label_matrix[items]
    probs, pop, _ = out_of_fold(x, y, cfg, seed=cfg.seed)
    return {
        "dataset": ds.name, "model": iv.config.model, "cf_key": iv.key, "items": int(len(items)),
        "folds": int(min(cfg.folds, len(items))), "labels": int((y.sum(0) > 0).sum()),
        "cf2label_map": _map(y, probs), "popularity_map": _map(y, pop),
        "evaluated_on": "out-of-fold over labelled train items with a CF vector",
    }
