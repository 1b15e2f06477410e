"""Training throughput, measured side by side in one run:

1. ``fit``'s loop vs a bare PyTorch loop on the same model, batch, data, optimiser, augmentation
   and loss (``image_only``: class-balanced BCE), printing images/s and the ratio.  The bare loop
   is the floor any framework overhead (sampler, masking, loss bookkeeping, NaN checks, progress)
   is compared against; evaluation time is excluded from both.
2. frozen trunks (cached features) vs full fine-tuning: the backbone's default
   ``--trainable-blocks``, the last block only, and ``--trunk mlp`` (whole backbone frozen, pooled
   features cached, a shared MLP under both heads): train images/s, the speed-up, fit wall time
   and the one-off cost of building the feature cache.

    python bench/bench_train.py --backbone resnet18 --image-size 64 --epochs 2 --threads 1

Data: the built-in ``synthetic`` world (800 items, 560 train) under a temporary RAYSEARCH_HOME
unless ``--data-root`` is given.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np
import torch


def bare_loop(run, data, epochs: int) -> float:
    """The same model/optimiser/augmentation/loss without fit(): returns train images/s."""
    from raysearch.data.images import train_batch
    from raysearch.train.losses import class_balance_weights, class_balanced_bce
    from raysearch.train.loop import _make_optimizer, build_model

    torch.manual_seed(run.train.seed)
    model, split_at = build_model(run, data)
    assert split_at == 0
    opt = _make_optimizer(model, run)
    train = data.split.train
    y = torch.tensor(data.labels)
    cw = class_balance_weights(y[train])
    g = torch.Generator().manual_seed(0)
    bs = run.train.batch_size
    model.train()
    n, t = 0, 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(train), generator=g).numpy()
        for s in range(0, len(perm) - bs + 1, bs):
            idx = train[perm[s:s + bs]]
            x = train_batch(torch.from_numpy(np.array(data.images[idx])), g)
            logits, _ = model(x)
            loss = class_balanced_bce(logits, y[idx], cw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(idx)
        t += time.perf_counter() - t0
    return n / t


def fit_ips(run, data) -> tuple[float, float, float]:
    """(train images/s over all epochs, wall time of fit incl. feature-cache build and eval, process
    CPU seconds of that fit: on a shared machine the CPU ratio is the one contention does not skew)."""
    from raysearch.train import fit

    t0, c0 = time.perf_counter(), time.process_time()
    r = fit(run, data, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = sum(h["images_per_s"] * h["epoch_time_s"] for h in r.history)
    return n / r.train_time_s, wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description="fit() vs bare PyTorch throughput; frozen-trunk speed-up")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--trainable-blocks", type=int, default=-1, help="-1: the backbone's default depth")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trunk-hidden", type=int, default=512, help="width of the --trunk mlp variant")
    ap.add_argument("--skip-loop", action="store_true", help="skip part 1 (fit vs bare loop)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.data_root is None:
        os.environ["RAYSEARCH_HOME"] = tempfile.mkdtemp(prefix="bench-train-")

    from raysearch.config import RunConfig, TrainConfig
    from raysearch.model.backbones import create_backbone
    from raysearch.train import prepare_training_data

    run = RunConfig(dataset=a.dataset, data_root=a.data_root, train=TrainConfig(
        method="image_only", backbone=a.backbone, weights=a.weights, image_size=a.image_size,
        batch_size=a.batch_size, epochs=a.epochs, patience=0, schedule="none"))
    data = prepare_training_data(run)
    print(f"{a.dataset}: {len(data.split.train)} train items, {a.backbone}/{a.weights} {a.image_size}px, "
          f"batch {a.batch_size}, {a.epochs} epochs, {a.threads} thread(s)")

    if not a.skip_loop:
        bare_loop(run, data, 1)  # warm-up (allocator, kernels)
        bare = bare_loop(run, data, a.epochs)
        ours, _, _ = fit_ips(run, data)
        print("\n1) loop overhead (train images/s, higher is better)")
        print(f"   bare PyTorch loop : {bare:8.1f}")
        print(f"   raysearch fit()   : {ours:8.1f}")
        print(f"   ratio fit/bare    : {ours / bare:8.3f}")

    n_blocks = create_backbone(a.backbone, "none").n_blocks
    tb = create_backbone(a.backbone, "none").default_trainable_blocks if a.trainable_blocks == -1 else a.trainable_blocks
    variants = [(f"--trainable-blocks {tb}", dict(trainable_blocks=tb)),
                ("--trainable-blocks 1 (last block)", dict(trainable_blocks=1)),
                (f"--trunk mlp (frozen backbone, shared MLP {a.trunk_hidden})", dict(trunk="mlp", trunk_hidden=a.trunk_hidden))]
    rows = []
    for name, kw in variants:
        frozen_run = dataclasses.replace(run, train=dataclasses.replace(run.train, **kw))
        _, first_wall, _ = fit_ips(frozen_run, data)  # builds the feature cache
        rows.append((name, first_wall, *fit_ips(frozen_run, data)))  # reuses it
    full_ips, full_wall, full_cpu = fit_ips(run, data)
    print(f"\n2) frozen trunk (cached features, {n_blocks} blocks) vs full fine-tuning: train img/s, fit wall and "
          f"CPU (train + per-epoch val); the first run of each builds its feature cache")
    print(f"   {'full fine-tuning':<52} {full_ips:9.1f} img/s   fit wall {full_wall:6.1f}s  cpu {full_cpu:6.1f}s")
    for name, first_wall, ips, wall, cpu in rows:
        print(f"   {name:<52} {ips:9.1f} img/s   fit wall {wall:6.1f}s  cpu {cpu:6.1f}s (first wall {first_wall:6.1f}s)"
              f"   speed-up {ips / full_ips:6.1f}x img/s, {full_wall / wall:5.1f}x fit wall, {full_cpu / cpu:5.1f}x fit cpu")


if __name__ == "__main__":
    main()
