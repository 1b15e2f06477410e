"""``BiasedVAECF``: Cornac's ``VAECF`` recommender training a :class:`BiasedVAE` with either loop.

The model object, ``score()`` (which reads ``self.r_mat``) and the loss are Cornac's; only
the network (:mod:`.vae`) and, with ``trainer="sparse"``, the loop (:mod:`.sparse`) differ.
"""
from __future__ import annotations

import numpy as np
import torch
from cornac.models import VAECF

from raysearch.cf.base import CFError
from raysearch.cf.models.vaecf.sparse import TrainLog, fit_threads, learn_sparse, torch_threads
from raysearch.cf.models.vaecf.vae import BiasedVAE


class BiasedVAECF(VAECF):
    """``cornac.models.VAECF`` training a :class:`BiasedVAE` (Cornac's ``fit`` keeps an existing ``vae``)."""

    def __init__(self, *args, item_bias: bool = True, trainer: str = "sparse", patience: int = 0, **kwargs):
        kwargs.setdefault("name", "VAECF+bias" if item_bias else "VAECF")
        super().__init__(*args, **kwargs)
        if trainer not in ("sparse", "cornac"):
            raise CFError(f"VAECF trainer {trainer!r} unknown; choose sparse or cornac")
        if trainer == "cornac" and patience > 0:
            raise CFError("early stopping (cf.patience > 0) needs cf.trainer sparse; Cornac's loop has none")
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
            if self.trainer == "cornac":
                return super().fit(train_set, val_set)  # keeps our vae; Cornac's learn()
            # what VAECF.fit does around learn(): bookkeeping, r_mat for score(), the same re-seed
            from cornac.models import Recommender

            Recommender.fit(self, train_set, val_set)
            self.device = torch.device("cpu")
            if self.seed is not None:
                torch.manual_seed(self.seed)
            self.r_mat = train_set.matrix
            self.train_log = learn_sparse(self.vae, train_set, self.n_epochs, self.batch_size, self.learning_rate,
                                          self.beta, patience=self.patience, seed=self.seed)
        return self

    def get_item_vectors(self) -> np.ndarray:
        return self.vae.item_factors.detach().cpu().numpy().astype(np.float32)

    def get_item_biases(self) -> np.ndarray | None:
        b = self.vae.item_bias
        return None if b is None else b.detach().cpu().numpy().astype(np.float32)
