"""``gmf``: Cornac ``GMF`` (NCF's generalised MF, PyTorch backend); vectors = the item embedding.

It stands in for WMF on this machine: Cornac's ``WMF`` needs TensorFlow (see :mod:`.wmf`).
"""
from __future__ import annotations

import numpy as np

from raysearch.cf.base import CFModel, register_cf_model


@register_cf_model("gmf")
class GMFModel(CFModel):
    """Generalised matrix factorisation (He et al. 2017) with negative sampling, PyTorch backend."""

    def build(self):
        from cornac.models import GMF

        c = self.cfg
        return GMF(num_factors=c.dim, reg=c.reg, num_epochs=c.epochs, batch_size=c.batch_size, num_neg=4,
                   lr=c.lr, learner="adam", backend="pytorch", seed=c.seed, verbose=False)

    def item_vectors(self):
        w = self.recommender.model.item_embedding.weight.detach().cpu().numpy()
        return np.asarray(w, dtype=np.float32), None
