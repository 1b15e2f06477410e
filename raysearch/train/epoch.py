"""One training epoch (timm's ``train_one_epoch``): batch assembly, triplet sampling, the stage's
loss composition and the non-finite-loss check."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raysearch.config import TrainConfig
from raysearch.train.inputs import Inputs
from raysearch.train.losses import aux_loss, class_balance_weights, class_balanced_bce, total_loss, triplet_loss
from raysearch.train.methods import Stage


def nearest_positive(cf_targets: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """For each candidate item, the *other* candidate whose CF vector is nearest in L2 (-1 elsewhere)."""
    pos = np.full(len(cf_targets), -1, dtype=np.int64)
    if len(candidates) < 2:
        return pos
    q = torch.from_numpy(np.asarray(cf_targets[candidates], dtype=np.float32))
    for s in range(0, len(q), 1024):
        d = torch.cdist(q[s:s + 1024], q)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        pos[candidates[s:s + 1024]] = candidates[d.argmin(1).numpy()]
    return pos


@dataclass
class Targets:
    """Per-item tensors the losses read (copies: the inputs may be read-only memmaps)."""

    labels: torch.Tensor
    labelled: torch.Tensor
    has_cf: torch.Tensor
    has_cf_np: np.ndarray
    weights: torch.Tensor
    cf: torch.Tensor | None
    class_w: torch.Tensor
    cf_train: np.ndarray            # train items with a CF vector (triplet negatives)
    pos_of: np.ndarray | None       # nearest CF neighbour per item (triplet positives)

    @classmethod
    def build(cls, data: Any, stages: list[Stage], device: torch.device, train: Any = None) -> "Targets":
        """``train`` (a TrainConfig): with ``cf_standardize``, the reconstruction targets are
        re-standardised under the loss's own clipped weights (identity for uniform weights)."""
        split = data.split
        cf_np = data.cf_targets
        if (cf_np is not None and train is not None and train.cf_standardize
                and any(s.aux == "reconstruct" for s in stages)):
            from raysearch.train.data import loss_standardized

            cf_np = loss_standardized(cf_np, data.has_cf, data.weights, train.omega)
        labels = torch.tensor(data.labels, dtype=torch.float32)
        labelled = torch.tensor(split.labelled, dtype=torch.bool)
        cf_train = split.train[data.has_cf[split.train]]
        triplets = any(s.aux == "triplet" for s in stages)
        return cls(
            labels=labels, labelled=labelled, has_cf=torch.tensor(data.has_cf, dtype=torch.bool),
            has_cf_np=data.has_cf, weights=torch.tensor(data.weights, dtype=torch.float32),
            cf=torch.tensor(cf_np, dtype=torch.float32) if cf_np is not None else None,
            class_w=class_balance_weights(labels[split.train], labelled[split.train]).to(device),
            cf_train=cf_train, pos_of=nearest_positive(data.cf_targets, cf_train) if triplets else None,
        )


def _batch(idx_np: np.ndarray, x: torch.Tensor, stage: Stage, targets: Targets, inputs: Inputs,
           np_rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray | None]:
    """The model input for one batch: anchors, then (triplet stages) positives and negatives."""
    if stage.aux != "triplet":
        return inputs.to_model(x, train=True), None
    pos = targets.pos_of[idx_np]
    ok = pos >= 0
    neg = targets.cf_train[np_rng.integers(0, len(targets.cf_train), size=len(idx_np))]
    pos = np.where(ok, pos, idx_np)
    return inputs.to_model(torch.cat([x, inputs.rows(pos), inputs.rows(neg)]), train=True), ok


def stage_loss(logits: torch.Tensor, cf_pred: torch.Tensor | None, idx: torch.Tensor, ok: np.ndarray | None,
               stage: Stage, targets: Targets, t: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                         torch.Tensor | None]:
    """(loss, main, aux) for one batch of ``len(idx)`` anchors, as the stage composes them."""
    dev, bsz = logits.device, len(idx)
    logits = logits[:bsz].float()
    main = aux = None
    if stage.main:
        main = class_balanced_bce(logits, targets.labels[idx].to(dev), targets.class_w, targets.labelled[idx].to(dev))
    if stage.aux == "reconstruct":
        aux = aux_loss(cf_pred.float(), targets.cf[idx].to(dev), targets.weights[idx].to(dev), t.omega,
                       targets.has_cf[idx].to(dev), norm=t.aux_norm)
    elif stage.aux == "triplet":
        p = cf_pred.float()
        aux = triplet_loss(p[:bsz], p[bsz:2 * bsz], p[2 * bsz:], t.tau,
                           torch.from_numpy(ok & targets.has_cf_np[idx.numpy()]).to(dev))
    if main is None:
        return t.alpha * aux + 0.0 * logits.sum(), main, aux  # keep the classifier in the graph (DDP)
    loss = total_loss(main, aux, t.alpha)
    if aux is None and cf_pred is not None:
        loss = loss + 0.0 * cf_pred.float().sum()
    return loss, main, aux


def _check_finite(loss: torch.Tensor, main: torch.Tensor | None, aux: torch.Tensor | None, epoch: int, b: int,
                  stage: Stage) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"non-finite training loss at epoch {epoch} batch {b} (stage {stage.name!r}): "
            f"main={None if main is None else float(main.detach())}, aux={None if aux is None else float(aux.detach())}; "
            f"lower train.lr or train.alpha"
        )


def train_one_epoch(model: torch.nn.Module, loader: Any, opt: torch.optim.Optimizer, stage: Stage,
                    targets: Targets, inputs: Inputs, t: TrainConfig, np_rng: np.random.Generator, epoch: int,
                    bar: Any) -> dict[str, float]:
    """One pass over ``loader``; returns the per-item mean losses and ``n_seen``."""
    model.train()
    sums = {"loss": 0.0, "main": 0.0, "aux": 0.0}
    n_seen = 0
    for b, (idx, x) in enumerate(loader):
        bsz = len(idx)
        xin, ok = _batch(idx.numpy(), x, stage, targets, inputs, np_rng)
        with inputs.autocast():
            logits, cf_pred = model(xin, inputs.split_at)
        loss, main, aux = stage_loss(logits, cf_pred, idx, ok, stage, targets, t)
        _check_finite(loss, main, aux, epoch, b, stage)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in (("loss", loss), ("main", main), ("aux", aux)):
            sums[k] += (float(v.detach()) if v is not None else 0.0) * bsz
        n_seen += bsz
        bar.advance()
    return {"train_loss": sums["loss"] / max(1, n_seen), "main_loss": sums["main"] / max(1, n_seen),
            "aux_loss": sums["aux"] / max(1, n_seen), "n_seen": n_seen}
