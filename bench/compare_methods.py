"""Test mAP of several methods over a few training seeds, side by side, with a negative control.

Used for the evidence of issue 4:

* synthetic world, label ratio 0.1, ``mtl`` vs ``image_only`` and ``mtl`` with CF vectors
  shuffled across items (``--shuffle-control``)::

    python bench/compare_methods.py --dataset synthetic --label-ratio 0.1 --backbone tiny_cnn \
        --weights none --image-size 32 --epochs 30 --lr 5e-3 --seeds 0,1,2 --shuffle-control \
        --variants image_only,mtl:uniform,mtl:interaction,mtl:loss

  (default alpha 1.5; measured test mAP: image_only 0.298, mtl 0.333-0.341, shuffled 0.295.
  At this script's default --lr 2e-3, 30 epochs are too few for the CF task to shape the
  tiny CNN and there is no gain.)

* real MovieLens posters with pretrained EfficientNet-Lite0 and the frozen-trunk mode::

    python bench/compare_methods.py --dataset movielens --data-root /tmp/rs-home \
        --backbone efficientnet_lite0 --weights imagenet --image-size 128 --trainable-blocks -1 \
        --variants image_only,mtl:uniform,mtl:interaction,mtl:loss --seeds 0,1,2

The split (and so the test items and the CF vectors) is fixed by ``--split-seed``; seeds vary
initialisation, sampling and augmentation, so per-seed results are paired across methods.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np
import torch

from raysearch.config import CFConfig, RunConfig, SplitConfig, TrainConfig
from raysearch.metrics import paired_bootstrap, paired_ttest
from raysearch.train import fit, prepare_training_data, shuffle_cf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--variants", default="image_only,mtl:uniform", help="method[:weighting],...")
    ap.add_argument("--shuffle-control", action="store_true", help="add mtl with CF vectors shuffled across items")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--label-ratio", type=float, default=1.0)
    ap.add_argument("--backbone", default="tiny_cnn")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--trainable-blocks", type=int, default=None, help="-1: the backbone's default depth")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=None, help="default: no early stopping")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--omega", type=float, default=3.0)
    ap.add_argument("--cf-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write all results as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    seeds = [int(s) for s in a.seeds.split(",")]
    variants = [tuple((v.split(":") + ["uniform"])[:2]) for v in a.variants.split(",")]
    if a.shuffle_control:
        variants.append(("mtl", "uniform", "shuffled"))
    base = RunConfig(
        dataset=a.dataset, data_root=a.data_root,
        split=SplitConfig(seed=a.split_seed, label_ratio=a.label_ratio), cf=CFConfig(dim=a.cf_dim),
        train=TrainConfig(backbone=a.backbone, weights=a.weights, image_size=a.image_size, epochs=a.epochs,
                          batch_size=a.batch_size, lr=a.lr, alpha=a.alpha, omega=a.omega,
                          patience=a.patience if a.patience is not None else a.epochs,
                          trainable_blocks=a.trainable_blocks),
    )
    data_cache: dict[str, object] = {}
    rows, scores = [], {}
    for v in variants:
        method, weighting = v[0], v[1]
        name = f"{method}" + (f":{weighting}" if method != "image_only" else "") + (":shuffled-cf" if len(v) > 2 else "")
        for seed in seeds:
            run = dataclasses.replace(base, train=dataclasses.replace(base.train, method=method, weighting=weighting, seed=seed))
            key = "none" if method == "image_only" else weighting
            if key not in data_cache:
                t = time.perf_counter()
                data_cache[key] = prepare_training_data(run)
                print(f"[prepare {key}: {time.perf_counter() - t:.1f}s]", flush=True)
            data = data_cache[key]
            if len(v) > 2:
                data = shuffle_cf(data, seed=1000 + seed)
            r = fit(run, data, progress=False)
            rows.append({"variant": name, "seed": seed, "val_map": r.best_val_map, "test_map": r.test_map,
                         "best_epoch": r.best_epoch, "epochs_run": r.epochs_run, "train_time_s": r.train_time_s})
            scores[(name, seed)] = r.test_scores
            print(f"{name:28s} seed {seed}: val {r.best_val_map:.4f}  test {r.test_map:.4f}  "
                  f"(best epoch {r.best_epoch}/{r.epochs_run}, {r.wall_time_s:.0f}s)", flush=True)

    names = list(dict.fromkeys(r["variant"] for r in rows))
    ref = names[0]
    y_test = next(iter(data_cache.values())).labels[next(iter(data_cache.values())).split.test]
    print(f"\n{'variant':28s} {'test mAP mean':>14s} {'std':>7s} {'rel. to ' + ref:>16s} {'paired t p':>11s} {'boot p (pooled)':>16s}")
    summary = {}
    for n in names:
        t = np.array([r["test_map"] for r in rows if r["variant"] == n])
        b = np.array([r["test_map"] for r in rows if r["variant"] == ref])
        rel = (t.mean() / b.mean() - 1) * 100
        p = paired_ttest(b, t)[1] if n != ref and len(seeds) > 1 else float("nan")
        # paired bootstrap on the test items, seed-averaged scores of each variant
        sa = np.mean([scores[(ref, s)] for s in seeds], 0)
        sb = np.mean([scores[(n, s)] for s in seeds], 0)
        pb = paired_bootstrap(y_test, sa, sb, n=500, seed=0).p_value if n != ref else float("nan")
        summary[n] = {"mean": float(t.mean()), "std": float(t.std()), "rel_pct": float(rel), "ttest_p": p, "boot_p": pb}
        print(f"{n:28s} {t.mean():14.4f} {t.std():7.4f} {rel:+15.1f}% {p:11.3g} {pb:16.3g}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "rows": rows, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
