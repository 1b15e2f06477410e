"""``BiasedVAECF``: Cornac's ``VAECF`` recommender training a :class:`BiasedVAE` with either loop.

The model object, ``score()`` (which reads ``self.r_mat``) and the loss are Cornac's; only
the network (:mod:`.vae`) and, with ``trainer="sparse"``, the loop (:mod:`.sparse`) differ.
"""
from __future__ import annotations

import numpy as np
import torch
from cornac.models import VAECF

from raysearch.cf.base import CFError
from raysearch.choices import CF_TRAINERS
from raysearch.cf.models.vaecf.sparse import TrainLog, fit_threads, learn_sparse, torch_threads
from raysearch.cf.models.vaecf.vae import BiasedVAE


class BiasedVAECF(VAECF):
    """``cornac.models.VAECF`` training a :class:`BiasedVAE` (Cornac's ``fit`` keeps an existing ``vae``)."""

    def __init__(self, *args, item_bias: bool = True, trainer: str = "sparse", patience: int = 0, **kwargs):
        kwargs.setdefault("name", "VAECF+bias" if item_bias else "VAECF")
        super().__init__(*args, **kwargs)
        if patience > 0 and not CF_TRAINERS.get(trainer).early_stopping:  # the name: checked by CFConfig
            able = " or ".join(n for n in CF_TRAINERS.names() if CF_TRAINERS.get(n).early_stopping)
            raise CFError(f"early stopping (cf.patience > 0) needs cf.trainer {able}; {trainer!r} has none")
        self.item_bias, self.trainer, self.patience = item_bias, trainer, patience
        self.train_log: TrainLog | None = None

    def fit(self, train_set, val_set=None):
        if not self.trainable:
            return super().fit(train_set, val_set)
        if self.seed is not None:
            torch.manual_seed(self.seed)
        self.vae = BiasedVAE(
            self.k, [train_set.num_items] + list(self.autoencoder_structure), self.act_fn,
            self.likelihood, item_bias=self.item_bias,
        )
        with torch_threads(fit_threads()):
            return CF_TRAINERS.get(self.trainer).fit(self, train_set, val_set)

    def get_item_vectors(self) -> np.ndarray:
        return self.vae.item_factors.detach().cpu().numpy().astype(np.float32)

    def get_item_biases(self) -> np.ndarray | None:
        b = self.vae.item_bias
        return None if b is None else b.detach().cpu().numpy().astype(np.float32)


# the loops of raysearch.choices.CF_TRAINERS (a trainer entry's ``fit``)

def fit_cornac(rec: BiasedVAECF, train_set, val_set=None) -> BiasedVAECF:
    """``cf.trainer: cornac``: ``VAECF.fit`` (it keeps our vae; Cornac's learn())."""
    return VAECF.fit(rec, train_set, val_set)


def fit_sparse(rec: BiasedVAECF, train_set, val_set=None) -> BiasedVAECF:
    """``cf.trainer: sparse``: what ``VAECF.fit`` does around learn() (bookkeeping, r_mat for score(),
    the same re-seed), then :func:`learn_sparse`."""
    from cornac.models import Recommender

    Recommender.fit(rec, train_set, val_set)
    rec.device = torch.device("cpu")
    if rec.seed is not None:
        torch.manual_seed(rec.seed)
    rec.r_mat = train_set.matrix
    rec.train_log = learn_sparse(rec.vae, train_set, rec.n_epochs, rec.batch_size, rec.learning_rate,
                                 rec.beta, patience=rec.patience, seed=rec.seed)
    return rec
