"""The faster VAECF training loop on sparse batches, with optional early stopping.

Training runs either Cornac's own loop (``cf.trainer: cornac``:
``cornac.models.vaecf.vaecf.learn``) or :func:`learn_sparse` (``cf.trainer: sparse``, the
default), a faithful faster loop over the same ``VAE`` object: same batches (Cornac's fixed user order), same multinomial ELBO
(``mean(beta * KL - sum_i x_ui log(softmax_i + 1e-10))``), same Adam.  Why: at
MovieLens-10M size Cornac's loop spends its time densifying every mini-batch
(``batch x n_items``), pushing it through a dense first layer and evaluating all four
likelihoods in ``VAE.loss``; with binary rows, ``x @ W1^T`` is a sum of the user's item
columns (``embedding_bag``) and ``sum_i x_ui log p_ui`` reads ``p`` only at the user's items,
so the dense work left is the decoder's softmax, which the loss needs.  Tests check the two
loops' losses, gradients and parameters after training agree.

``cf.patience > 0`` adds early stopping on a held-out interaction AUC: 20% of the interactions
of up to 2,000 users (at most a tenth of them; seeded) are hidden from training; after every epoch those users' AUC
(held-out items vs every item they have not interacted with, Cornac's per-user AUC) is
measured and the best epoch's weights are kept once ``patience`` epochs bring no gain.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from cornac.models.vaecf.vaecf import EPS, VAE

from raysearch.cf.base import CFError
from raysearch.cf.models.vaecf.vae import BiasedVAE

log = logging.getLogger(__name__)

#: users whose interactions are partly held out for early stopping, and the part held out
VAL_USERS, VAL_FRACTION = 2000, 0.2


def fit_threads() -> int:
    """Torch threads for a CF fit: ``RAYSEARCH_CF_THREADS``, else every core this process may use
    (a Ray worker's OMP_NUM_THREADS=1 would otherwise leave a 10M-interaction fit on one core)."""
    env = os.environ.get("RAYSEARCH_CF_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise CFError(f"RAYSEARCH_CF_THREADS={env!r}: expected a positive integer")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int):
    """Set torch's intra-op threads for a block and restore them after (the process may be a trial)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@dataclass
class SparseRows:
    """Rows of a binary CSR matrix as ``embedding_bag`` input plus their (row, col) coordinates."""

    idx: torch.Tensor       # int64 (nnz,): item ids, row after row
    offsets: torch.Tensor   # int64 (n_rows,): start of each row in ``idx``
    rows: torch.Tensor      # int64 (nnz,): the row (0..n_rows-1) of each entry
    n_rows: int

    @classmethod
    def of(cls, m: sp.csr_matrix, users: np.ndarray | slice) -> "SparseRows":
        sub = m[users]
        counts = np.diff(sub.indptr)
        return cls(torch.from_numpy(sub.indices.astype(np.int64)), torch.from_numpy(sub.indptr[:-1].astype(np.int64)),
                   torch.from_numpy(np.repeat(np.arange(sub.shape[0], dtype=np.int64), counts)), sub.shape[0])


def sparse_forward(vae: VAE, x: SparseRows, sample: bool = True):
    """``vae(x_dense)`` for binary rows without densifying them, up to the decoder's logits:
    the first encoder layer ``x @ W1^T + b1`` is the sum of the rows' item columns of ``W1``
    (``embedding_bag``), the rest is the VAE's own modules (a :class:`BiasedVAE`'s
    ``Linear`` + ``ItemBias`` decoder as one ``addmm``).  Returns (logits, mu, logvar);
    ``softmax(logits)`` is what ``VAE.decode`` returns.  ``sample=False`` decodes ``mu`` (what
    Cornac's ``score`` does)."""
    fc0 = vae.encoder.fc0
    h = F.embedding_bag(x.idx, fc0.weight.t().contiguous(), x.offsets, mode="sum") + fc0.bias
    for m in list(vae.encoder.children())[1:]:
        h = m(h)
    mu, logvar = vae.enc_mu(h), vae.enc_logvar(h)
    z = vae.reparameterize(mu, logvar) if sample else mu
    if isinstance(vae, BiasedVAE):
        return F.linear(z, vae.item_factors, vae.item_bias), mu, logvar
    return vae.decoder(z), mu, logvar


class _MultLogLik(torch.autograd.Function):
    """``sum_(r,c) log(softmax(h)[r, c] + EPS)`` over the given entries, without materialising
    the softmax in the forward pass or its (dense) gather/softmax backward graph:
    d/dh_rj = a_rj [j in row r] - softmax(h)_rj * sum_(c in row r) a_rc, a = p / (p + EPS)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(h, 1)
        p = logp[rows, cols].exp()
        ctx.save_for_backward(logp, rows, cols, p)
        return torch.log(p + EPS).sum()

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        logp, rows, cols, p = ctx.saved_tensors
        a = (p / (p + EPS)) * g
        s = torch.zeros(logp.shape[0], dtype=logp.dtype).index_add_(0, rows, a)
        grad = logp.exp_().mul_(-s[:, None])  # logp is not needed after this (backward runs once)
        return grad.index_put_((rows, cols), a, accumulate=True), None, None


def sparse_loss(logits: torch.Tensor, x: SparseRows, mu: torch.Tensor, logvar: torch.Tensor,
                beta: float) -> torch.Tensor:
    """Cornac's ``VAE.loss`` for ``likelihood="mult"`` and binary x: ``mean_u(beta KL_u - ll_u)``
    with ``ll_u = sum_i x_ui log(softmax_i + EPS)``, read at the user's items only."""
    ll = _MultLogLik.apply(logits, x.rows, x.idx)
    std = torch.exp(0.5 * logvar)
    kld = -0.5 * (1 + 2.0 * torch.log(std) - mu.pow(2) - std.pow(2))
    return (beta * kld.sum() - ll) / logits.shape[0]


def per_user_auc(scores: torch.Tensor, known: sp.csr_matrix, held: sp.csr_matrix) -> np.ndarray:
    """AUC of each row of ``scores`` (users x items): held-out items (``held``) against every item
    neither in ``known`` nor held out, ties counted as misses (Cornac's ``AUC``); rows without a
    held-out item or a negative are left out."""
    n_pos = torch.from_numpy(np.diff(held.indptr))
    kr = torch.from_numpy(np.repeat(np.arange(known.shape[0]), np.diff(known.indptr)))
    hr = torch.from_numpy(np.repeat(np.arange(held.shape[0]), np.diff(held.indptr)))
    hc = torch.from_numpy(held.indices.astype(np.int64))
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    mask[kr, torch.from_numpy(known.indices.astype(np.int64))] = True
    mask[hr, hc] = True
    neg = scores.masked_fill(mask, float("inf")).sort(1).values  # the negatives, then +inf (excluded)
    below = torch.searchsorted(neg[hr], scores[hr, hc].unsqueeze(1).contiguous(), side="left").squeeze(1)
    correct = torch.zeros(scores.shape[0], dtype=torch.float64).index_add_(0, hr, below.double())
    n_neg = (~mask).sum(1)
    ok = (n_pos > 0) & (n_neg > 0)
    return (correct[ok] / (n_pos[ok] * n_neg[ok]).double()).numpy()


@torch.no_grad()
def heldout_auc(vae: VAE, known: sp.csr_matrix, held: sp.csr_matrix, users: np.ndarray, chunk: int = 512) -> float:
    """Mean :func:`per_user_auc` of ``users``, scored from their ``known`` row with ``z = mu``
    as Cornac's ``score`` does (logits: the same order per user as its softmax)."""
    was = vae.training
    vae.eval()
    try:
        aucs = [per_user_auc(sparse_forward(vae, SparseRows.of(known, u), sample=False)[0], known[u], held[u])
                for u in (users[s:s + chunk] for s in range(0, len(users), chunk))]
    finally:
        vae.train(was)
    a = np.concatenate(aucs) if aucs else np.zeros(0)
    return float(a.mean()) if len(a) else float("nan")


def hold_out(m: sp.csr_matrix, n_users: int, fraction: float, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Hide ``fraction`` (>= 1) of the interactions of ``n_users`` random users with >= 2 of them:
    (train matrix, held-out matrix, those users).  Other users keep all their interactions."""
    rng = np.random.default_rng(seed)
    deg = np.diff(m.indptr)
    eligible = np.flatnonzero(deg >= 2)
    users = np.sort(rng.choice(eligible, size=min(n_users, len(eligible)), replace=False))
    drop = np.zeros(m.nnz, dtype=bool)
    for u in users:
        a, b = m.indptr[u], m.indptr[u + 1]
        k = max(1, int(round(fraction * (b - a))))
        drop[a + rng.choice(b - a, size=k, replace=False)] = True
    held = m.copy()
    held.data = np.where(drop, held.data, 0).astype(m.dtype)
    held.eliminate_zeros()
    train = m.copy()
    train.data = np.where(drop, 0, train.data).astype(m.dtype)
    train.eliminate_zeros()
    return train, held, users


@dataclass
class TrainLog:
    """What :func:`learn_sparse` did: per-epoch loss (and held-out AUC with early stopping)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    val_users: int = 0
    val_interactions: int = 0

    @property
    def best_auc(self) -> float | None:
        aucs = [h["val_auc"] for h in self.history if "val_auc" in h]
        return max(aucs) if aucs else None


def learn_sparse(vae: VAE, train_set, n_epochs: int, batch_size: int, learn_rate: float, beta: float, *,
                 patience: int = 0, seed: int | None = 0, min_delta: float = 1e-4,
                 on_epoch=None) -> TrainLog:
    """Cornac's ``learn`` (same user batches in Cornac's fixed order, same loss, Adam with the same
    hyperparameters; its fused CPU kernel) on sparse batches; see the module docstring.
    ``patience > 0``: early stopping on held-out interaction AUC, best weights restored."""
    if vae.likelihood != "mult":
        raise CFError(f"cf.trainer 'sparse' implements the multinomial likelihood only, not {vae.likelihood!r}; "
                      "use cf.trainer cornac")
    m = sp.csr_matrix(train_set.matrix, dtype=np.float32, copy=True)
    m.data[:] = 1.0  # Cornac binarises each batch
    m.sort_indices()
    tlog = TrainLog()
    held = val_users = None
    if patience > 0:  # at most VAL_USERS, and at most a tenth of the users
        n_val = min(VAL_USERS, max(1, m.shape[0] // 10))
        m, held, val_users = hold_out(m, n_val, VAL_FRACTION, 0 if seed is None else seed)
        tlog.val_users, tlog.val_interactions = len(val_users), int(held.nnz)
    users = np.unique(train_set.uir_tuple[0])  # Cornac's user_iter order (a set of small ints iterates sorted)
    opt = torch.optim.Adam(params=vae.parameters(), lr=learn_rate, fused=True)
    best, best_state, bad = -np.inf, None, 0
    for epoch in range(1, n_epochs + 1):
        vae.train()
        sum_loss, count = 0.0, 0
        for s in range(0, len(users), batch_size):
            x = SparseRows.of(m, users[s:s + batch_size])
            p, mu, logvar = sparse_forward(vae, x)
            loss = sparse_loss(p, x, mu, logvar, beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sum_loss += loss.item()
            count += x.n_rows
        rec = {"epoch": epoch, "loss": sum_loss / max(count, 1)}
        if patience > 0:
            rec["val_auc"] = auc = heldout_auc(vae, m, held, val_users)
            if auc > best + min_delta:
                best, bad, tlog.best_epoch = auc, 0, epoch
                best_state = {k: v.detach().clone() for k, v in vae.state_dict().items()}
            else:
                bad += 1
        else:
            tlog.best_epoch = epoch
        tlog.history.append(rec)
        log.debug("vaecf epoch %d: %s", epoch, rec)
        if on_epoch is not None:
            on_epoch(rec)
        if patience > 0 and bad >= patience:
            tlog.stopped_early = epoch < n_epochs
            break
    if best_state is not None:
        vae.load_state_dict(best_state)
    vae.eval()
    return tlog
