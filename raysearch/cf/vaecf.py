"""Cornac's ``VAECF`` with an explicit, switchable per-item bias and a linear decoder.

Why a subclass: the paper (Sec. 4.1.3) takes "the last layer of the decoder" as
the item matrix Q and found that adding item bias terms helps.  Cornac 3.0.1's
``VAE`` mirrors the encoder in the decoder, so its output layer's per-item weights
are ``hidden[0]``-dimensional, not ``k``; and its output ``nn.Linear`` does carry a
bias, but implicitly, with no way to switch it off or export it.  Here:

* encoder: Cornac's, ``n_items -> *hidden -> (mu, logvar)`` of size ``dim``;
* decoder: one bias-free ``nn.Linear(dim, n_items)`` (``decoder.fc0``) whose weight
  rows are the item vectors q_i (so Q has exactly ``cfg.dim`` columns: the MF
  reading of Sec. 3.3, logit_ui = z_u . q_i + b_i), followed by
  ``decoder.item_bias`` (a learnable b_i) when ``cfg.bias`` is true and nothing
  when false (the no-bias ablation).

Training (``cornac.models.vaecf.vaecf.learn``), the loss, batching from the CSR
matrix and ``score()`` (which reads ``self.r_mat``) are Cornac's, unchanged: the
bias lives inside ``decoder`` so Cornac's ``VAE.decode`` applies it.
"""
from __future__ import annotations

import numpy as np
import torch
from cornac.models import VAECF
from cornac.models.vaecf.vaecf import VAE
from torch import nn

from raysearch.cf.base import CFModel, register_cf_model


class ItemBias(nn.Module):
    """Adds one learnable scalar per item to the decoder logits (before softmax)."""

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_items))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.bias


class BiasedVAE(VAE):
    """Cornac's ``VAE`` with the decoder replaced by ``Linear(k, n_items, bias=False)`` [+ ``ItemBias``]."""

    def __init__(self, z_dim: int, ae_structure: list[int], act_fn: str, likelihood: str, item_bias: bool = True):
        super().__init__(z_dim, ae_structure, act_fn, likelihood)
        n_items = ae_structure[0]
        self.decoder = nn.Sequential()
        self.decoder.add_module("fc0", nn.Linear(z_dim, n_items, bias=False))
        if item_bias:
            self.decoder.add_module("item_bias", ItemBias(n_items))

    @property
    def item_factors(self) -> torch.Tensor:
        return self.decoder.fc0.weight  # (n_items, k)

    @property
    def item_bias(self) -> torch.Tensor | None:
        return self.decoder.item_bias.bias if hasattr(self.decoder, "item_bias") else None


class BiasedVAECF(VAECF):
    """``cornac.models.VAECF`` training a :class:`BiasedVAE` (Cornac's ``fit`` keeps an existing ``vae``)."""

    def __init__(self, *args, item_bias: bool = True, **kwargs):
        kwargs.setdefault("name", "VAECF+bias" if item_bias else "VAECF")
        super().__init__(*args, **kwargs)
        self.item_bias = item_bias

    def fit(self, train_set, val_set=None):
        if self.trainable:
            if self.seed is not None:
                torch.manual_seed(self.seed)
            self.vae = BiasedVAE(
                self.k, [train_set.num_items] + list(self.autoencoder_structure), self.act_fn,
                self.likelihood, item_bias=self.item_bias,
            )
        return super().fit(train_set, val_set)

    def get_item_vectors(self) -> np.ndarray:
        return self.vae.item_factors.detach().cpu().numpy().astype(np.float32)

    def get_item_biases(self) -> np.ndarray | None:
        b = self.vae.item_bias
        return None if b is None else b.detach().cpu().numpy().astype(np.float32)


@register_cf_model("vaecf")
class VAECFModel(CFModel):
    """Mult-VAE (Liang et al. 2018) via Cornac; the paper's CF model of choice."""

    has_bias = True

    def build(self) -> BiasedVAECF:
        c = self.cfg
        return BiasedVAECF(
            k=c.dim, autoencoder_structure=list(c.hidden), act_fn="tanh", likelihood="mult",
            n_epochs=c.epochs, batch_size=c.batch_size, learning_rate=c.lr, beta=c.beta,
            seed=c.seed, verbose=False, item_bias=c.bias,
        )

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self.recommender.get_item_vectors(), self.recommender.get_item_biases()
