"""Adapters for the other Cornac models whose items get fixed-size vectors.

``bpr``: Cornac ``BPR`` (Cython SGD); vectors ``i_factors``, bias ``i_biases``.
``gmf``: Cornac ``GMF`` (NCF's generalised MF, PyTorch backend); vectors = the item
embedding.  It stands in for WMF on this machine: Cornac's ``WMF`` is written in
TensorFlow, which is not a dependency here (``wmf`` is registered and works when
tensorflow is installed; otherwise it says so before training).
``bivaecf``: Cornac ``BiVAECF`` (bilateral VAE, PyTorch); vectors = item posterior means.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from raysearch.cf.base import CFError, CFModel, register_cf_model


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
