""":func:`fit`: the one training function that ``raysearch train`` runs once and the search stage
runs per Ray Tune trial.

A plain PyTorch loop over the method's stages (:mod:`raysearch.train.methods`): each epoch is
:func:`~raysearch.train.epoch.train_one_epoch` then validation; early stopping and the best
checkpoint follow val mAP (:mod:`raysearch.train.early_stopping`), and ``callback(metrics)``
receives one dict per epoch (rank 0) so Ray Tune can report/prune.
With ``distributed=True`` (inside a Ray Train worker) the model goes through
``ray.train.torch.prepare_model`` and batches through a ``DistributedSampler``.

Determinism: on CPU with the same seed two runs give the same mAP (seeded init, sampler,
augmentation and negative sampling; ``torch.use_deterministic_algorithms`` while fitting).
On CUDA the loop uses bfloat16 autocast and channels_last instead and is not bit-exact.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from raysearch.choices import TRUNKS
from raysearch.config import RunConfig, to_dict
from raysearch.errors import InputError
from raysearch.metrics import macro_roc_auc, mean_average_precision
from raysearch.train.data import TrainingData
from raysearch.train.early_stopping import EarlyStopping, state_copy
from raysearch.train.epoch import Targets, train_one_epoch
from raysearch.train.evaluate import predict
from raysearch.train.inputs import Inputs, Items
from raysearch.train.methods import METHODS, Stage


#: the one trial outcome: what ``fit`` returns, a sweep trial's / experiment unit's final report,
#: ``raysearch train --json`` and a model directory's ``result.json`` / ``model.json`` all use these keys
OUTCOME_KEYS = ("best_val_map", "test_map", "best_epoch", "epochs_run", "stop_reason", "wall_time_s", "train_time_s")


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
    #: (n_val, L) scores of the best weights, from the epoch that kept them (None after a resume that
    #: restored them, with no tracked stage, or on CUDA, where the loop scores under bfloat16
    #: autocast): save_model's thresholds need no second val pass
    val_scores: np.ndarray | None = field(default=None, repr=False)

    def outcome(self) -> dict[str, Any]:
        """The typed outcome as plain values (``OUTCOME_KEYS``; a NaN test mAP when none was computed)."""
        out = {k: getattr(self, k) for k in OUTCOME_KEYS}
        out["test_map"] = float("nan") if self.test_map is None else float(self.test_map)
        return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v) if isinstance(v, (int, np.integer))
                    else str(v)) for k, v in out.items()}


# ----------------------------------------------------------------------------- helpers

def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


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


@contextlib.contextmanager
def _threads(n: int):
    """``train.threads`` for this fit (0: leave torch's count): CPU results depend on the count."""
    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(prev)


def build_model(run: RunConfig, data: TrainingData):
    """Backbone (+ frozen lower blocks) and heads; returns (model, split index)."""
    from raysearch.model.backbones import create_backbone
    from raysearch.model.heads import CollaborativeModel

    t = run.train
    method = METHODS.get(t.method)
    torch.manual_seed(t.seed)
    bb = create_backbone(t.backbone, t.weights)
    # an MLP trunk is meant for frozen features: unless told otherwise the whole backbone is frozen
    frozen = TRUNKS.get(t.trunk).freezes_backbone and t.trainable_blocks is None
    split_at = bb.split_index(0 if frozen else t.trainable_blocks)
    if split_at > 0:
        bb.freeze_below(split_at)
    cf_dim = None
    if method.uses_cf:
        if data.cf_targets is None:
            raise ValueError(f"method {t.method!r} needs CF vectors but TrainingData.cf_targets is None")
        cf_dim = data.cf_targets.shape[1]
    return CollaborativeModel(bb, data.labels.shape[1], cf_dim, trunk=t.trunk, trunk_hidden=t.trunk_hidden), split_at


# ----------------------------------------------------------------------------- fit

def _check_trainable(run: RunConfig, data: TrainingData) -> None:
    method = METHODS.get(run.train.method)
    if len(data.split.train_labelled) == 0:
        raise InputError("no labelled train items: nothing for the main task to learn")
    if method.uses_cf and not data.has_cf[data.split.train].any():
        raise InputError(f"method {run.train.method!r}: no train item has a CF vector")


def _placement(t: Any, distributed: bool) -> tuple[int, int, torch.device]:
    """(rank, world size, device): inside a Ray Train worker they come from its context."""
    if not distributed:
        return 0, 1, _resolve_device(t.device)
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    # train.device: cpu pins CPU even on a GPU worker (the trainer then uses gloo): what lets a
    # GPU-scheduled trial run where the GPU is only logical (tests, a driver-less node)
    device = torch.device("cpu") if t.device == "cpu" else ray.train.torch.get_device()
    return ctx.get_world_rank(), ctx.get_world_size(), device


def _source(run: RunConfig, data: TrainingData, model: Any, split_at: int, device: torch.device) -> np.ndarray:
    """Frozen trunk -> its cached features; else the raw uint8 images (augmented per batch)."""
    if split_at == 0:
        return data.images
    from raysearch.model.backbones import weights_tag
    from raysearch.train.features import feature_key, trunk_features

    t = run.train
    key = feature_key(fingerprint=data.fingerprint, backbone=t.backbone, weights=weights_tag(t.weights),
                      image_size=data.images.shape[1], split=split_at, init_seed=t.seed)
    return trunk_features(model.backbone, split_at, data.images, key, data_root=run.data_root,
                          batch_size=max(64, t.batch_size), device=device)


def _loader(items: np.ndarray, source: np.ndarray, t: Any, rank: int, world: int, distributed: bool):
    """(loader, sampler); ``train.batch_size`` is the global batch: DDP ranks take an equal share."""
    ds = Items(items, source)
    if distributed:
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=t.seed)
    else:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(t.seed))
    rank_bs = max(1, t.batch_size // world)
    loader = DataLoader(ds, batch_size=rank_bs, sampler=sampler, num_workers=t.num_workers,
                        drop_last=len(items) // world > rank_bs, persistent_workers=False)
    return loader, sampler


class _Run:
    """One :func:`fit`'s moving parts (model, inputs, targets, loader, RNG streams, progress);
    its methods are the loop's steps, so a resumed run and a fresh one share every line."""

    def __init__(self, run: RunConfig, data: TrainingData, rank: int, world: int, device: torch.device,
                 distributed: bool, checkpoint_dir: str | os.PathLike | None, resume: dict[str, Any] | None) -> None:
        t = self.t = run.train
        self.run, self.data, self.world, self.distributed, self.resume = run, data, world, distributed, resume
        torch.manual_seed(t.seed)
        self.np_rng = np.random.default_rng([t.seed, rank])
        model, split_at = build_model(run, data)
        source = _source(run, data, model, split_at, device)
        model.to(device)
        if device.type == "cuda" and split_at == 0:
            model = model.to(memory_format=torch.channels_last)
        if distributed:
            import ray.train.torch

            model = ray.train.torch.prepare_model(model, move_to_device=False)
        self.model, self.core = model, _unwrap(model)
        self.targets = Targets.build(data, METHODS.get(t.method).stages(t), device, train=t)
        self.loader, self.sampler = _loader(data.split.train, source, t, rank, world, distributed)
        self.inputs = Inputs(source, split_at, device, torch.Generator().manual_seed(t.seed * 1000 + rank))
        ckpt = None
        if checkpoint_dir is not None and rank == 0:
            Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
            ckpt = str(Path(checkpoint_dir) / "best.pt")
        self.tracker = EarlyStopping(t.patience, ckpt, to_dict(run))
        self.history: list[dict[str, Any]] = []
        self.epoch, self.train_time, self.start_stage, self.start_k = 0, 0.0, 0, 0
        self.val_time = 0.0
        self.best_val_scores: np.ndarray | None = None
        if resume is not None:
            self._restore(resume)

    def _restore(self, r: dict[str, Any]) -> None:
        """Continue after the epoch a per-epoch state was taken (see :meth:`_state_fn`)."""
        self.start_stage, self.start_k = int(r["stage"]), int(r["stage_epoch"])
        self.epoch, self.train_time = int(r["epoch"]), float(r["train_time_s"])
        self.val_time = float(r.get("eval_time_s", 0.0))  # absent in states written before it was kept
        self.tracker.load(r, bad_epochs=int(r["bad_epochs"]))
        self.history = list(r.get("history", []))
        self.core.load_state_dict(r["model"])
        self.np_rng.bit_generator.state = r["np_rng"]
        self.inputs.aug_gen.set_state(r["aug_gen"])
        torch.set_rng_state(r["torch_rng"])
        gen = getattr(self.sampler, "generator", None)
        if gen is not None and r.get("sampler_gen") is not None:
            gen.set_state(r["sampler_gen"])

    def _optimizers(self, si: int, stage: Stage):
        """A fresh optimizer and LR schedule per stage (the resumed stage's from the saved state)."""
        opt = _make_optimizer(self.model, self.run)
        sched = _make_scheduler(opt, self.run, stage.epochs)
        if self.resume is not None and si == self.start_stage:
            opt.load_state_dict(self.resume["optimizer"])
            if sched is not None and self.resume.get("scheduler") is not None:
                sched.load_state_dict(self.resume["scheduler"])
        else:
            self.tracker.bad_epochs = 0
        return opt, sched

    def predict(self, items: np.ndarray) -> np.ndarray:
        return predict(self.model, self.inputs, items, self.data.labels.shape[1], max(2 * self.t.batch_size, 64))

    def _epoch(self, stage: Stage, opt: Any, sched: Any, show: bool) -> dict[str, Any]:
        self.epoch += 1
        if self.distributed:
            self.sampler.set_epoch(self.epoch)
        te = time.perf_counter()
        with _progress(show, f"epoch {self.epoch} ({stage.name})", len(self.loader)) as bar:
            losses = train_one_epoch(self.model, self.loader, opt, stage, self.targets, self.inputs, self.t,
                                     self.np_rng, self.epoch, bar)
        ep_train = time.perf_counter() - te
        self.train_time += ep_train
        lr = opt.param_groups[0]["lr"]
        if sched is not None:
            sched.step()
        split = self.data.split
        tv = time.perf_counter()
        val_scores = self.predict(split.val)
        val_map = mean_average_precision(self.data.labels[split.val], val_scores)
        val_auc = macro_roc_auc(self.data.labels[split.val], val_scores)  # ASHA's rung signal (--rung-metric)
        ep_val = time.perf_counter() - tv
        self.val_time += ep_val
        improved = stage.track_best and self.tracker.update(val_map, self.epoch, self.core)
        if improved:
            self.best_val_scores = val_scores
        m = {"epoch": self.epoch, "stage": stage.name, "train_loss": losses["train_loss"],
             "main_loss": losses["main_loss"], "aux_loss": losses["aux_loss"], "val_map": val_map,
             "val_auc": val_auc, "best_val_map": max(self.tracker.best_val, 0.0), "improved": improved, "lr": lr,
             "tracked": stage.track_best,  # False: aux-only stage, val mAP of an untrained classifier
             "images_per_s": losses["n_seen"] * self.world / max(ep_train, 1e-9), "epoch_time_s": ep_train,
             "val_time_s": ep_val}
        self.history.append(m)
        return m

    def _state_fn(self, si: int, k: int, opt: Any, sched: Any) -> Callable[[], dict[str, Any]]:
        """The full training state after this epoch, built only if the caller asks for it."""
        snap = dict(stage=si, stage_epoch=k + 1, epoch=self.epoch, train_time_s=self.train_time,
                    eval_time_s=self.val_time,
                    bad_epochs=self.tracker.bad_epochs, **self.tracker.state(), history=list(self.history))
        gen = getattr(self.sampler, "generator", None)
        return lambda: {**snap, "model": state_copy(self.core), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict() if sched is not None else None,
                        "np_rng": self.np_rng.bit_generator.state, "aug_gen": self.inputs.aug_gen.get_state(),
                        "torch_rng": torch.get_rng_state(), "sampler_gen": gen.get_state() if gen is not None else None}

    def train(self, stages: list[Stage], callback: Callable[[dict[str, Any]], None] | None, epoch_state: bool,
              show: bool) -> str:
        """Every stage's epochs; the stop reason (``completed`` or ``early_stopped``)."""
        total = sum(s.epochs for s in stages)
        for si, stage in enumerate(stages):
            if si < self.start_stage:
                continue
            opt, sched = self._optimizers(si, stage)
            for k in range(self.start_k if si == self.start_stage else 0, stage.epochs):
                m = self._epoch(stage, opt, sched, show)
                if callback is not None:  # _last: the schedule's last epoch (a final report follows it)
                    callback({**m, "_state": self._state_fn(si, k, opt, sched), "_last": self.epoch == total}
                             if epoch_state else dict(m))
                if stage.track_best and self.tracker.exhausted:
                    if self.epoch < total:  # patience ran out on the last epoch: it simply completed
                        return "early_stopped"
                    break
        return "completed"

    def best_model_scores(self) -> np.ndarray:
        """Load the best weights (the last ones if no tracked stage ran) and score the test items."""
        if self.tracker.best_state is None:
            self.tracker.best_state = state_copy(self.core)
        self.core.load_state_dict(self.tracker.best_state)
        return self.predict(self.data.split.test)


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
    t0 = time.perf_counter()
    stages = METHODS.get(run.train.method).stages(run.train)
    _check_trainable(run, data)
    rank, world, device = _placement(run.train, distributed)
    with _deterministic(device.type != "cuda"), _threads(run.train.threads):
        r = _Run(run, data, rank, world, device, distributed, checkpoint_dir, resume)
        show = progress if progress is not None else (callback is None and rank == 0 and sys.stderr.isatty())
        report = callback if rank == 0 or callback_all_ranks else None  # Train V2's report is a barrier
        stop_reason = r.train(stages, report, epoch_state, show)
        test_scores = r.best_model_scores()
    tr = r.tracker
    return TrainResult(
        best_val_map=float(tr.best_val), test_map=float(mean_average_precision(data.labels[data.split.test], test_scores)),
        epochs_run=r.epoch, stop_reason=stop_reason, history=r.history, wall_time_s=time.perf_counter() - t0,
        train_time_s=r.train_time, best_state=tr.best_state, checkpoint_path=tr.checkpoint_path,
        best_epoch=tr.best_epoch, test_scores=test_scores,
        # on CUDA the loop evaluates under bfloat16 autocast: a saved model's float32 scores differ more
        val_scores=r.best_val_scores if device.type == "cpu" else None,
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
