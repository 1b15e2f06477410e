"""``bivaecf``: Cornac ``BiVAECF`` (bilateral VAE, PyTorch); vectors = item posterior means."""
from __future__ import annotations

import numpy as np

from raysearch.cf.base import CFModel, register_cf_model


@register_cf_model("bivaecf")
class BiVAECFModel(CFModel):
    """Bilateral VAE (Truong et al. 2021); ``cfg.hidden`` is the encoder structure, ``cfg.beta`` the KL weight."""

    def build(self):
        from cornac.models import BiVAECF

        c = self.cfg
        return BiVAECF(k=c.dim, encoder_structure=list(c.hidden) or [c.dim], act_fn="tanh", likelihood="pois",
                       n_epochs=c.epochs, batch_size=c.batch_size, learning_rate=c.lr, beta_kl=c.beta,
                       seed=c.seed, use_gpu=False, verbose=False)

    def item_vectors(self):
        return np.asarray(self.recommender.get_item_vectors(), dtype=np.float32), None
