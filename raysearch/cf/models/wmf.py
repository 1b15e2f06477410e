"""``wmf``: Cornac ``WMF`` (weighted MF); vectors ``V``.

Cornac's WMF is written in TensorFlow, which is not a dependency here: the model is registered
and works when tensorflow is installed; otherwise it says so before training.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from raysearch.cf.base import CFError, CFModel, register_cf_model


@register_cf_model("wmf")
class WMFModel(CFModel):
    """Weighted matrix factorisation (Hu et al. 2008); Cornac's implementation needs tensorflow."""

    def build(self):
        if importlib.util.find_spec("tensorflow") is None:
            raise CFError("Cornac's WMF is implemented in TensorFlow, which is not installed; "
                          "use --model gmf (PyTorch MF with negative sampling), bpr or vaecf")
        from cornac.models import WMF

        c = self.cfg
        return WMF(k=c.dim, lambda_u=c.reg, lambda_v=c.reg, learning_rate=c.lr, batch_size=c.batch_size,
                   max_iter=c.epochs, seed=c.seed, verbose=False)

    def item_vectors(self):
        return np.asarray(self.recommender.V, dtype=np.float32), None
