"""``vaecf``: Mult-VAE via Cornac's ``VAECF``, with a switchable item bias and a faster loop.

Layout (Cornac's: the registered adapter here, the model code beside it, imported only when
a fit needs it so ``import raysearch.cf`` does not pay for Cornac):

* :mod:`.vae` - ``BiasedVAE``: Cornac's ``VAE`` with a bias-free linear decoder whose rows are
  the item vectors (the paper's Q, exactly ``cfg.dim`` wide) and an optional learnable item bias;
* :mod:`.sparse` - ``learn_sparse``: Cornac's loop on sparse batches (same batches, loss and
  Adam; much faster at MovieLens-10M size), with early stopping on held-out interaction AUC;
* :mod:`.recommender` - ``BiasedVAECF``: Cornac's ``VAECF`` training a ``BiasedVAE`` with
  Cornac's loop (``cf.trainer: cornac``) or ``learn_sparse`` (``cf.trainer: sparse``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from raysearch.cf.base import CFModel, register_cf_model

if TYPE_CHECKING:
    from raysearch.cf.models.vaecf.recommender import BiasedVAECF


@register_cf_model("vaecf")
class VAECFModel(CFModel):
    """Mult-VAE (Liang et al. 2018) via Cornac; the paper's CF model of choice."""

    has_bias = True

    def build(self) -> "BiasedVAECF":
        from raysearch.cf.models.vaecf.recommender import BiasedVAECF  # torch + Cornac: only when fitting

        c = self.cfg
        return BiasedVAECF(
            k=c.dim, autoencoder_structure=list(c.hidden), act_fn="tanh", likelihood="mult",
            n_epochs=c.epochs, batch_size=c.batch_size, learning_rate=c.lr, beta=c.beta,
            seed=c.seed, verbose=False, item_bias=c.bias, trainer=c.trainer, patience=c.patience,
        )

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self.recommender.get_item_vectors(), self.recommender.get_item_biases()
