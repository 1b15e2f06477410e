"""The paper's losses (Section 3.4), with the numerical choices spelled out.

Main task - class-balanced BCE (Eq. 1).  eta_n = positives of class n among the *labelled*
train items; raw weight 1/eta_n, normalised so the mean weight over classes is 1.  A class
with no labelled positive gets eta_n := 1 before normalising (it still receives the negative
signal; an infinite weight would be meaningless).  Per item the weighted BCE is *summed* over
classes as in Eq. 1, then averaged over the labelled rows of the batch (rows whose labels are
hidden by the label ratio contribute nothing).

Auxiliary task - l_CF_R = exp(L1(q, q_hat) + L2(q, q_hat)).  What follows whom:
  * the paper (Eq. 2) writes raw distances, L1 = sum_d |d| and L2 = ||d||_2; over a 64-d vector
    they reach hundreds and exp overflows float32 (exp(89) = inf);
  * the authors' code uses per-dimension means, L1 = mean_d |d| and L2 = mean_d d^2 (the mean
    squared error, *no* square root);
  * ours: per-dimension means like the code, but L2 = sqrt(mean_d d^2) (the RMS, i.e. the
    Euclidean distance / sqrt(D)), so L2 stays a distance as in the paper and grows linearly,
    not quadratically, with the error; the minimum exp(0) = 1 at a perfect reconstruction is
    the paper's.  sqrt(. + 1e-12) keeps the gradient finite at a perfect reconstruction;
  * ours: a safe exponential: above ``EXP_CLAMP`` (= 20) exp is continued by its tangent line,
    exp(c) * (1 + z - c), so the value stays finite and the gradient keeps pointing towards
    the target instead of vanishing as a hard clamp would.
Per item aux_i = min(w_i, Omega) * l_CF_R(q_i, q_hat_i) (paper Eq. 2).  The batch reduction is
``train.aux_norm`` (rows without a CF vector count nowhere):
  * ``weight_sum`` (default, the authors' code): sum_i min(w_i, Omega) l_i / sum_i min(w_i, Omega),
    so the weights are *relative* and alpha means the same for every weighting scheme (weights
    that all clip at Omega give exactly the uniform loss);
  * ``mean``: sum_i min(w_i, Omega) l_i / #rows, so alpha is multiplied by the mean clipped
    weight (e.g. ~2.95 for interaction weights on ``synthetic``, 92% clipped at Omega = 3).
total = main + alpha * aux.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from raysearch.choices import AUX_NORMS

EXP_CLAMP = 20.0


def class_balance_weights(labels: torch.Tensor, labelled: torch.Tensor | None = None) -> torch.Tensor:
    """(L,) weights 1/eta_n normalised to mean 1, counting positives over labelled rows only."""
    y = labels if labelled is None else labels[labelled.bool()]
    eta = y.float().sum(0).clamp_min(1.0)
    w = 1.0 / eta
    return w / w.mean()


def class_balanced_bce(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1: sum_n w_n * BCE(y_n, sigmoid(z_n)), mean over rows where ``mask`` (0 if none)."""
    per = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    per_row = (per * class_weights.to(per)).sum(1)
    if mask is None:
        return per_row.mean()
    m = mask.to(per_row.dtype)
    return (per_row * m).sum() / m.sum().clamp_min(1.0)


def safe_exp(z: torch.Tensor, clamp: float = EXP_CLAMP) -> torch.Tensor:
    """exp(z) for z <= clamp, tangent-line continuation exp(c)(1 + z - c) above (finite, C1)."""
    zc = z.clamp(max=clamp)
    return torch.where(z <= clamp, torch.exp(zc), torch.exp(torch.tensor(clamp, dtype=z.dtype, device=z.device)) * (1 + z - clamp))


def cf_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row l_CF_R = exp(mean|d| + sqrt(mean d^2)), shape (N,)."""
    d = pred.float() - target.float()
    l1 = d.abs().mean(1)
    l2 = torch.sqrt(d.pow(2).mean(1) + 1e-12)
    return safe_exp(l1 + l2)


def aux_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, omega: float,
             has_cf: torch.Tensor, norm: str = "weight_sum") -> torch.Tensor:
    """Eq. 2 over rows with a CF vector: sum_i min(w_i, Omega) * l_CF_R, divided by the sum of the
    clipped weights (``norm="weight_sum"``, the authors' code) or by the row count (``"mean"``)."""
    divisor = AUX_NORMS.get(norm).denominator  # the name: checked by TrainConfig
    m = has_cf.to(torch.float32)
    if m.sum() == 0:
        return pred.sum() * 0.0  # keeps the graph (DDP needs every parameter to get a grad)
    w = weights.float().clamp(max=omega) * m
    l = cf_reconstruction_loss(pred, torch.where(has_cf[:, None], target, pred.detach()))
    denom = divisor(w, m)
    # normalise the weights first: equal clipped weights then give bit-identical relative weights
    return ((w / denom.clamp_min(1e-12)) * l).sum()


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, tau: float,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Section 4.3.1: max(L2(a, p) - L2(a, n) + tau, 0) on *predicted* CF vectors."""
    dp = (anchor - positive).pow(2).sum(1).add(1e-12).sqrt()
    dn = (anchor - negative).pow(2).sum(1).add(1e-12).sqrt()
    l = F.relu(dp - dn + tau)
    if mask is None:
        return l.mean()
    m = mask.to(l.dtype)
    return (l * m).sum() / m.sum().clamp_min(1.0)


def total_loss(main: torch.Tensor, aux: torch.Tensor | None, alpha: float) -> torch.Tensor:
    return main if aux is None else main + alpha * aux
