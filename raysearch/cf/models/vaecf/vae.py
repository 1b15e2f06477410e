"""Cornac's ``VAE`` with an explicit, switchable per-item bias and a linear decoder.

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
"""
from __future__ import annotations

import torch
from cornac.models.vaecf.vaecf import VAE
from torch import nn


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
