"""Phase two: fine-tune a backbone on labels (+ the CF auxiliary task) - the one training
function that ``raysearch train`` runs once and the search stage runs per Ray Tune trial.

:func:`prepare_training_data` gathers everything a run needs into a numpy-only, picklable
:class:`TrainingData` (shared between trials through the Ray object store).  :func:`fit` is a
plain PyTorch loop: methods are stage lists (:mod:`raysearch.train.methods`), losses are the paper's
(:mod:`raysearch.train.losses`), early stopping and the best checkpoint follow val mAP, and
``callback(metrics)`` receives one dict per epoch (rank 0) so Ray Tune can report/prune.
With ``distributed=True`` (inside a Ray Train worker) the model goes through
``ray.train.torch.prepare_model`` and batches through a ``DistributedSampler``.

Determinism: on CPU with the same seed two runs give the same mAP (seeded init, sampler,
augmentation and negative sampling; ``torch.use_deterministic_algorithms`` while fitting).
On CUDA the loop uses bfloat16 autocast and channels_last instead and is not bit-exact.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset, DistributedSampler, RandomSampler

from raysearch.errors import InputError
from raysearch.config import RunConfig, to_dict
from raysearch.data.splits import Split
from raysearch.train.losses import aux_loss, class_balance_weights, class_balanced_bce, total_loss, triplet_loss
from raysearch.train.methods import METHODS, Stage
from raysearch.metrics import mean_average_precision


@dataclass
class TrainingData:
    """Everything :func:`fit` reads, aligned to dataset item indices (row i = item i)."""

    images: np.ndarray            # uint8 (N, S, S, 3), may be a read-only memmap
    labels: np.ndarray            # float32 (N, L)
    label_names: list[str]
    split: Split
    cf_targets: np.ndarray | None  # float32 (N, D) or None (image_only)
    has_cf: np.ndarray            # bool (N,): train items with a CF vector
    weights: np.ndarray           # float32 (N,): per-item CF confidence (0 without a vector)
    n_interactions: np.ndarray    # int64 (N,): train-matrix interactions per item
    dataset: str
    fingerprint: str

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"TrainingData.images must be uint8 (N, S, S, 3), got {self.images.dtype} {self.images.shape}")
        checks = {"labels": self.labels, "has_cf": self.has_cf, "weights": self.weights,
                  "n_interactions": self.n_interactions, "split.labelled": self.split.labelled}
        if self.cf_targets is not None:
            checks["cf_targets"] = self.cf_targets
        for k, v in checks.items():
            if len(v) != n:
                raise ValueError(f"TrainingData.{k} has {len(v)} rows but images has {n}")
        if self.labels.shape[1] != len(self.label_names):
            raise ValueError(f"TrainingData.labels has {self.labels.shape[1]} columns but {len(self.label_names)} label names")
        if self.cf_targets is not None and not np.isfinite(self.cf_targets[self.has_cf]).all():
            bad = np.flatnonzero(~np.isfinite(self.cf_targets).all(1) & self.has_cf)[:5].tolist()
            raise ValueError(f"TrainingData.cf_targets has non-finite values for items {bad}")


@dataclass
class TrainResult:
    best_val_map: float
    test_map: float
    epochs_run: int
    stop_reason: str              # completed | early_stopped
    history: list[dict[str, Any]]
    wall_time_s: float
    train_time_s: float
    best_state: dict[str, torch.Tensor] | None = None
    checkpoint_path: str | None = None
    best_epoch: int = 0
    test_scores: np.ndarray | None = field(default=None, repr=False)  # (n_test, L) sigmoid scores


def aux_weighting(run: RunConfig) -> str | None:
    """The weighting scheme ``prepare_training_data`` really uses: None without CF; only
    ``mtl``/``sequential`` weight the reconstruction loss, the others use ``uniform``.
    Shared-data caches key on this, not on the sampled ``train.weighting``."""
    method = METHODS.get(run.train.method)
    if not method.uses_cf:
        return None
    return run.train.weighting if method.name in ("mtl", "sequential") else "uniform"


def prepare_training_data(run: RunConfig, data_root: str | os.PathLike | None = None,
                          split: Split | None = None) -> TrainingData:
    """Dataset -> split -> image cache (+ CF vectors and per-item weights unless ``image_only``).

    With ``train.cf_standardize`` (default) each CF target dimension is z-scored over the train
    items that have a vector (mean 0, std 1; items without one are left at 0 and never read).
    Why: raw Cornac factors are small and model-dependent (VAECF means have per-dim std ~0.1,
    BPR's differ), so exp(L1 + L2) with per-dimension means stays near exp(0) and its gradient
    is weak, and ``alpha`` would mean different things for different CF models.  The transform
    is affine per dimension, so it keeps all the information the vectors carry.
    ``split`` (e.g. one cross-validation fold) replaces ``make_split(ds, run.split)``; the CF
    vectors and weights are then computed from that split's train items only.
    """
    from raysearch.data.images import load_image_cache
    from raysearch.data.registry import load_dataset
    from raysearch.data.splits import make_split

    root = data_root if data_root is not None else run.data_root
    method = METHODS.get(run.train.method)
    ds = load_dataset(run.dataset, root)
    split = make_split(ds, run.split) if split is None else split
    images = load_image_cache(ds, run.train.image_size, data_root=root)
    n = ds.n_items
    n_inter = np.asarray(ds.interaction_matrix(split.cf_items).sum(0)).ravel().astype(np.int64)
    cf_targets, has_cf, weights = None, np.zeros(n, dtype=bool), np.zeros(n, dtype=np.float32)
    if method.uses_cf:
        from raysearch.cf.base import compute_item_vectors
        from raysearch.cf.weights import item_weights

        iv = compute_item_vectors(ds, split, run.cf, data_root=root)
        cf_targets = np.asarray(iv.targets(), dtype=np.float32)
        has_cf = np.asarray(iv.has_vector, dtype=bool)
        if run.train.cf_standardize:
            cf_targets = standardize_cf(cf_targets, has_cf)
        weights = np.asarray(item_weights(aux_weighting(run), ds, split, iv, seed=run.split.seed), dtype=np.float32)
    return TrainingData(
        images=images, labels=ds.label_matrix.astype(np.float32), label_names=ds.label_names, split=split,
        cf_targets=cf_targets, has_cf=has_cf, weights=weights, n_interactions=n_inter,
        dataset=ds.name, fingerprint=ds.fingerprint,
    )


def standardize_cf(cf_targets: np.ndarray, has_cf: np.ndarray) -> np.ndarray:
    """Per-dimension z-score over the rows with a CF vector (float32; other rows set to 0)."""
    out = np.zeros(cf_targets.shape, dtype=np.float32)
    if not has_cf.any():
        return out
    x = np.asarray(cf_targets[has_cf], dtype=np.float64)
    sd = x.std(0)
    out[has_cf] = ((x - x.mean(0)) / np.where(sd > 1e-8, sd, 1.0)).astype(np.float32)
    return out


def shuffle_cf(data: TrainingData, seed: int = 0) -> TrainingData:
    """Negative control: permute CF targets (and their weights) across the train items that have
    one, breaking the item <-> CF-vector link while keeping the target distribution.  A gain of
    ``mtl`` over ``image_only`` that survives this shuffle would not come from CF information."""
    import dataclasses

    if data.cf_targets is None:
        raise ValueError("shuffle_cf: TrainingData has no CF targets")
    items = np.flatnonzero(data.has_cf)
    perm = np.random.default_rng(seed).permutation(items)
    cf = np.array(data.cf_targets, copy=True)
    w = np.array(data.weights, copy=True)
    cf[items], w[items] = data.cf_targets[perm], data.weights[perm]
    return dataclasses.replace(data, cf_targets=cf, weights=w)


# ----------------------------------------------------------------------------- helpers

class _Items(TorchDataset):
    """Position k -> (item index, uint8 image or cached trunk features) for a fixed item list."""

    def __init__(self, items: np.ndarray, source: np.ndarray) -> None:
        self.items, self.source = np.asarray(items, dtype=np.int64), source

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor]:
        i = int(self.items[k])
        return i, torch.from_numpy(np.array(self.source[i]))


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


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


def _make_optimizer(model: torch.nn.Module, run: RunConfig) -> torch.optim.Optimizer:
    t = run.train
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=False)
    raise InputError(f"train.optimizer {t.optimizer!r} unknown; choose adamw or sgd")


def _make_scheduler(opt: torch.optim.Optimizer, run: RunConfig, epochs: int):
    s = run.train.schedule
    if s == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    if s == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)
    if s == "none":
        return None
    raise InputError(f"train.schedule {s!r} unknown; choose cosine, step or none")


@contextlib.contextmanager
def _deterministic(enabled: bool):
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def build_model(run: RunConfig, data: TrainingData):
    """Backbone (+ frozen lower blocks) and heads; returns (model, split index)."""
    from raysearch.model.backbones import create_backbone
    from raysearch.model.heads import CollaborativeModel

    t = run.train
    method = METHODS.get(t.method)
    torch.manual_seed(t.seed)
    bb = create_backbone(t.backbone, t.weights)
    # an MLP trunk is meant for frozen features: unless told otherwise the whole backbone is frozen
    split_at = bb.split_index(0 if t.trunk == "mlp" and t.trainable_blocks is None else t.trainable_blocks)
    if split_at > 0:
        bb.freeze_below(split_at)
    cf_dim = None
    if method.uses_cf:
        if data.cf_targets is None:
            raise ValueError(f"method {t.method!r} needs CF vectors but TrainingData.cf_targets is None")
        cf_dim = data.cf_targets.shape[1]
    return CollaborativeModel(bb, data.labels.shape[1], cf_dim, trunk=t.trunk, trunk_hidden=t.trunk_hidden), split_at


# ----------------------------------------------------------------------------- fit

def fit(run: RunConfig, data: TrainingData, callback: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_dir: str | os.PathLike | None = None, distributed: bool = False,
        progress: bool | None = None, callback_all_ranks: bool = False,
        resume: dict[str, Any] | None = None, epoch_state: bool = False) -> TrainResult:
    """Train one configuration; see the module docstring.  Raises ``FloatingPointError`` naming
    the epoch and batch on a non-finite loss.

    Fault tolerance: with ``epoch_state=True`` every callback dict also carries ``"_state"``, a
    zero-argument function returning the full training state after that epoch (model, optimizer,
    LR schedule, early-stopping counters, best model, RNG streams); ``resume=`` that dict continues
    the run after that epoch instead of from epoch 0 (a trial restarted on another node)."""
    from raysearch.data.images import eval_batch, train_batch

    t0 = time.perf_counter()
    t = run.train
    method = METHODS.get(t.method)
    stages = method.stages(t)
    split = data.split
    if len(split.train_labelled) == 0:
        raise InputError("no labelled train items: nothing for the main task to learn")
    if method.uses_cf and not data.has_cf[split.train].any():
        raise InputError(f"method {t.method!r}: no train item has a CF vector")
    rank, world = 0, 1
    device = _resolve_device(t.device)
    if distributed:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        device = ray.train.torch.get_device()
    cuda = device.type == "cuda"

    with _deterministic(not cuda):
        torch.manual_seed(t.seed)
        np_rng = np.random.default_rng([t.seed, rank])
        model, split_at = build_model(run, data)

        # frozen trunk -> cached features; else raw uint8 images with on-the-fly augmentation
        if split_at > 0:
            from raysearch.train.features import feature_key, trunk_features
            from raysearch.model.backbones import weights_tag

            key = feature_key(fingerprint=data.fingerprint, backbone=t.backbone, weights=weights_tag(t.weights),
                              image_size=data.images.shape[1], split=split_at, init_seed=t.seed)
            source = trunk_features(model.backbone, split_at, data.images, key, data_root=run.data_root,
                                    batch_size=max(64, t.batch_size), device=device)
        else:
            source = data.images

        model.to(device)
        if cuda and split_at == 0:
            model = model.to(memory_format=torch.channels_last)
        if distributed:
            model = ray.train.torch.prepare_model(model, move_to_device=False)
        core = _unwrap(model)

        labels_t = torch.tensor(data.labels, dtype=torch.float32)  # copies: inputs may be read-only
        labelled_t = torch.tensor(split.labelled, dtype=torch.bool)
        has_cf_t = torch.tensor(data.has_cf, dtype=torch.bool)
        weights_t = torch.tensor(data.weights, dtype=torch.float32)
        cf_t = torch.tensor(data.cf_targets, dtype=torch.float32) if data.cf_targets is not None else None
        class_w = class_balance_weights(labels_t[split.train], labelled_t[split.train]).to(device)
        cf_train = split.train[data.has_cf[split.train]]
        pos_of = nearest_positive(data.cf_targets, cf_train) if any(s.aux == "triplet" for s in stages) else None

        train_ds = _Items(split.train, source)
        if distributed:
            sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=t.seed)
        else:
            sampler = RandomSampler(train_ds, generator=torch.Generator().manual_seed(t.seed))
        # train.batch_size is the global batch: DDP ranks take an equal share of it
        rank_bs = max(1, t.batch_size // world)
        loader = DataLoader(train_ds, batch_size=rank_bs, sampler=sampler, num_workers=t.num_workers,
                            drop_last=len(split.train) // world > rank_bs, persistent_workers=False)
        aug_gen = torch.Generator().manual_seed(t.seed * 1000 + rank)

        def to_input(x: torch.Tensor, train: bool) -> torch.Tensor:
            if split_at == 0:
                x = train_batch(x, aug_gen) if train else eval_batch(x)
                x = x.to(device, non_blocking=True)
                return x.contiguous(memory_format=torch.channels_last) if cuda else x
            return x.to(device, non_blocking=True).float()

        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

        @torch.no_grad()
        def predict(items: np.ndarray) -> np.ndarray:
            model.eval()
            out = []
            bs = max(2 * t.batch_size, 64)
            for s in range(0, len(items), bs):
                idx = items[s:s + bs]
                x = to_input(torch.from_numpy(np.asarray(source[idx])), train=False)
                with autocast():
                    logits, _ = model(x, split_at)
                out.append(torch.sigmoid(logits.float()).cpu().numpy())
            return np.concatenate(out) if out else np.zeros((0, data.labels.shape[1]), np.float32)

        show = progress if progress is not None else (callback is None and rank == 0 and sys.stderr.isatty())
        history: list[dict[str, Any]] = []
        best_val, best_epoch, best_state = -math.inf, 0, None
        ckpt_path = None
        if checkpoint_dir is not None and rank == 0:
            Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
            ckpt_path = str(Path(checkpoint_dir) / "best.pt")
        stop_reason, epoch, train_time = "completed", 0, 0.0
        stopped = False
        total_epochs = sum(s.epochs for s in stages)

        start_stage, start_k = 0, 0
        if resume is not None:
            start_stage, start_k, epoch, train_time = (int(resume["stage"]), int(resume["stage_epoch"]),
                                                       int(resume["epoch"]), float(resume["train_time_s"]))
            best_val, best_epoch, best_state = float(resume["best_val"]), int(resume["best_epoch"]), resume["best_state"]
            history = list(resume.get("history", []))
            core.load_state_dict(resume["model"])
            np_rng.bit_generator.state = resume["np_rng"]
            aug_gen.set_state(resume["aug_gen"])
            torch.set_rng_state(resume["torch_rng"])
            sampler_gen = getattr(sampler, "generator", None)
            if sampler_gen is not None and resume.get("sampler_gen") is not None:
                sampler_gen.set_state(resume["sampler_gen"])
        for si, stage in enumerate(stages):
            if stopped:
                break
            if si < start_stage:
                continue
            opt = _make_optimizer(model, run)
            sched = _make_scheduler(opt, run, stage.epochs)
            bad_epochs = 0
            first_k = 0
            if resume is not None and si == start_stage:
                first_k, bad_epochs = start_k, int(resume["bad_epochs"])
                opt.load_state_dict(resume["optimizer"])
                if sched is not None and resume.get("scheduler") is not None:
                    sched.load_state_dict(resume["scheduler"])
            for k in range(first_k, stage.epochs):
                epoch += 1
                if distributed:
                    sampler.set_epoch(epoch)
                model.train()
                te = time.perf_counter()
                sums = {"loss": 0.0, "main": 0.0, "aux": 0.0}
                n_seen, n_batches = 0, 0
                prog = _progress(show, f"epoch {epoch} ({stage.name})", len(loader))
                with prog as bar:
                    for b, (idx, x) in enumerate(loader):
                        idx_np = idx.numpy()
                        bsz = len(idx_np)
                        parts, ok = [x], None
                        if stage.aux == "triplet":
                            pos = pos_of[idx_np]
                            ok = pos >= 0
                            neg = cf_train[np_rng.integers(0, len(cf_train), size=bsz)]
                            pos = np.where(ok, pos, idx_np)
                            parts += [torch.from_numpy(np.asarray(source[pos])), torch.from_numpy(np.asarray(source[neg]))]
                        xin = to_input(torch.cat(parts) if len(parts) > 1 else x, train=True)
                        with autocast():
                            logits, cf_pred = model(xin, split_at)
                        logits = logits[:bsz].float()
                        main = aux = None
                        if stage.main:
                            main = class_balanced_bce(logits, labels_t[idx].to(device), class_w, labelled_t[idx].to(device))
                        if stage.aux == "reconstruct":
                            aux = aux_loss(cf_pred.float(), cf_t[idx].to(device), weights_t[idx].to(device), t.omega,
                                           has_cf_t[idx].to(device), norm=t.aux_norm)
                        elif stage.aux == "triplet":
                            p = cf_pred.float()
                            aux = triplet_loss(p[:bsz], p[bsz:2 * bsz], p[2 * bsz:], t.tau,
                                               torch.from_numpy(ok & data.has_cf[idx_np]).to(device))
                        if main is None:
                            loss = t.alpha * aux + 0.0 * logits.sum()  # keep the classifier in the graph (DDP)
                        else:
                            loss = total_loss(main, aux, t.alpha)
                            if aux is None and cf_pred is not None:
                                loss = loss + 0.0 * cf_pred.float().sum()
                        if not torch.isfinite(loss):
                            raise FloatingPointError(
                                f"non-finite training loss at epoch {epoch} batch {b} (stage {stage.name!r}): "
                                f"main={None if main is None else float(main.detach())}, aux={None if aux is None else float(aux.detach())}; "
                                f"lower train.lr or train.alpha"
                            )
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        sums["loss"] += float(loss.detach()) * bsz
                        sums["main"] += (float(main.detach()) if main is not None else 0.0) * bsz
                        sums["aux"] += (float(aux.detach()) if aux is not None else 0.0) * bsz
                        n_seen += bsz
                        n_batches += 1
                        bar.advance()
                ep_train = time.perf_counter() - te
                train_time += ep_train
                lr = opt.param_groups[0]["lr"]
                if sched is not None:
                    sched.step()
                val_map = mean_average_precision(data.labels[split.val], predict(split.val))
                improved = False
                if stage.track_best:
                    if val_map > best_val:
                        best_val, best_epoch, improved = val_map, epoch, True
                        best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
                        if ckpt_path:
                            torch.save({"model": best_state, "epoch": epoch, "val_map": val_map,
                                        "config": to_dict(run)}, ckpt_path)
                        bad_epochs = 0
                    else:
                        bad_epochs += 1
                m = {
                    "epoch": epoch, "stage": stage.name, "train_loss": sums["loss"] / max(1, n_seen),
                    "main_loss": sums["main"] / max(1, n_seen), "aux_loss": sums["aux"] / max(1, n_seen),
                    "val_map": val_map, "best_val_map": max(best_val, 0.0), "improved": improved, "lr": lr,
                    "tracked": stage.track_best,  # False: aux-only stage, val mAP of an untrained classifier
                    "images_per_s": n_seen * world / max(ep_train, 1e-9), "epoch_time_s": ep_train,
                }
                history.append(m)
                if callback is not None and (rank == 0 or callback_all_ranks):  # Train V2's report is a barrier
                    out = dict(m)
                    if epoch_state:
                        snap = dict(stage=si, stage_epoch=k + 1, epoch=epoch, train_time_s=train_time,
                                    best_val=best_val, best_epoch=best_epoch, bad_epochs=bad_epochs)
                        out["_state"] = lambda snap=snap, opt=opt, sched=sched: {
                            **snap, "model": {kk: v.detach().cpu().clone() for kk, v in core.state_dict().items()},
                            "best_state": best_state, "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict() if sched is not None else None,
                            "np_rng": np_rng.bit_generator.state, "aug_gen": aug_gen.get_state(),
                            "torch_rng": torch.get_rng_state(),
                            "sampler_gen": (sampler.generator.get_state()
                                            if getattr(sampler, "generator", None) is not None else None),
                            "history": list(history)}
                    callback(out)
                if stage.track_best and t.patience > 0 and bad_epochs >= t.patience:
                    if epoch < total_epochs:  # patience ran out on the last epoch: it simply completed
                        stop_reason, stopped = "early_stopped", True
                    break

        if best_state is None:  # no tracked stage ran (cannot happen with the registered methods)
            best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
        core.load_state_dict(best_state)
        test_scores = predict(split.test)
        test_map = mean_average_precision(data.labels[split.test], test_scores)
    return TrainResult(
        best_val_map=float(best_val), test_map=float(test_map), epochs_run=epoch, stop_reason=stop_reason,
        history=history, wall_time_s=time.perf_counter() - t0, train_time_s=train_time, best_state=best_state,
        checkpoint_path=ckpt_path, best_epoch=best_epoch, test_scores=test_scores,
    )


def _progress(show: bool, desc: str, total: int):
    """One transient bar per epoch (:mod:`raysearch.progress`)."""
    from raysearch.progress import bar

    return bar(show, desc, total, transient=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a :func:`fit` checkpoint (``weights_only=True``: tensors and plain values only)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    return torch.load(p, map_location="cpu", weights_only=True)
