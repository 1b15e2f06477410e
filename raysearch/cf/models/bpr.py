"""``bpr``: Cornac ``BPR`` (Bayesian Personalized Ranking, Cython SGD); vectors ``i_factors``, bias ``i_biases``."""
from __future__ import annotations

import numpy as np

from raysearch.cf.base import CFModel, register_cf_model


@register_cf_model("bpr")
class BPRModel(CFModel):
    """Bayesian Personalized Ranking; ``cfg.reg`` is lambda_reg, ``cfg.bias`` learns item biases."""

    has_bias = True

    def build(self):
        from cornac.models import BPR

        c = self.cfg
        # one thread: Cornac's multi-threaded BPR is Hogwild (not reproducible) and the CPUs are shared
        return BPR(k=c.dim, max_iter=c.epochs, learning_rate=c.lr, lambda_reg=c.reg, use_bias=c.bias,
                   num_threads=1, seed=c.seed, verbose=False)

    def item_vectors(self):
        r = self.recommender
        bias = np.asarray(r.i_biases, dtype=np.float32) if self.cfg.bias else None
        return np.asarray(r.i_factors, dtype=np.float32), bias
