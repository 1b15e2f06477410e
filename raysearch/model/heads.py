"""Task heads on top of a :class:`~raysearch.model.backbones.Backbone`.

The classifier is a single linear layer on pooled features (the paper fine-tunes the CNN with
a new classification layer); the CF head is a small MLP regressing the item's CF target
(the latent vector, plus the item-bias column when the CF model has one).  Both read the
same pooled features, so the auxiliary gradient shapes the shared backbone.

With ``trunk="mlp"`` a shared MLP (:class:`MLPTrunk`) sits between the pooled features and
both heads.  Why: on a frozen backbone (features computed once and cached) the heads alone
share nothing the CF target could shape; the MLP is the shared representation the auxiliary
task trains, at a small fraction of the cost of fine-tuning a backbone block.
"""
from __future__ import annotations

import torch
from torch import nn

from raysearch.choices import TRUNKS
from raysearch.model.backbones import Backbone


class CFHead(nn.Module):
    """feature_dim -> hidden -> cf_dim MLP (ReLU); predicts q_hat."""

    def __init__(self, in_dim: int, cf_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, cf_dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class MLPTrunk(nn.Module):
    """feature_dim -> hidden -> hidden (Linear + ReLU twice): the shared layers both heads read."""

    def __init__(self, in_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.out_dim = hidden
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class CollaborativeModel(nn.Module):
    """Backbone [+ MLP trunk] + classifier (+ CF head when ``cf_dim``). ``forward`` returns
    (logits, cf_pred|None)."""

    def __init__(self, backbone: Backbone, n_labels: int, cf_dim: int | None = None,
                 cf_hidden: int = 256, dropout: float = 0.0, trunk: str = "backbone", trunk_hidden: int = 512) -> None:
        super().__init__()
        build = TRUNKS.get(trunk).build  # the name: checked by TrainConfig
        self.backbone = backbone
        self.trunk = build(backbone.feature_dim, trunk_hidden) if build is not None else None
        dim = self.trunk.out_dim if self.trunk is not None else backbone.feature_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(dim, n_labels)
        self.cf_head = CFHead(dim, cf_dim, cf_hidden) if cf_dim else None

    def forward(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``start`` > 0: ``x`` holds cached outputs of backbone block ``start-1`` (frozen trunk)."""
        f = self.backbone(x, start)
        if self.trunk is not None:
            f = self.trunk(f)
        logits = self.classifier(self.dropout(f))
        cf = self.cf_head(f) if self.cf_head is not None else None
        return logits, cf
