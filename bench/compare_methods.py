"""Compare methods / weighting schemes with the experiment protocol, from training flags.

A thin wrapper over ``raysearch experiment`` (paired K-fold x seeds, per-fold CF, paired item
bootstrap on pooled out-of-fold predictions, t-test and Wilcoxon over fold x seed units, Holm):
it turns the flags below into one RunConfig YAML shared by every variant and runs the experiment.
(The script it replaces pooled seed-*averaged* scores in its bootstrap, i.e. it scored an
ensemble, not the per-seed models; the experiment scores each seed's models and averages mAPs.)

The synthetic evidence of issue 9 (README, "Does the CF task help?")::

    python bench/compare_methods.py --dataset synthetic --label-ratios 0.1 --backbone tiny_cnn \
        --weights none --image-size 32 --epochs 30 --lr 5e-3 --folds 5 --seeds 2 --shuffle-control \
        --variants image_only,mtl:uniform,mtl:interaction,mtl:loss --out /tmp/exp-synthetic

Everything after ``--`` goes to ``raysearch experiment`` unchanged (e.g. ``-- --address host:6379``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--variants", default="image_only,mtl:uniform", help="method[:weighting],...")
    ap.add_argument("--shuffle-control", nargs="?", const="first", default="none", choices=["none", "first", "all"],
                    help="shuffled-CF control arms: first (the first mtl arm; the bare flag) or all (one per mtl arm)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--label-ratios", default="1.0")
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
    ap.add_argument("--aux-norm", default="weight_sum", choices=["weight_sum", "mean"])
    ap.add_argument("--cf-dim", type=int, default=64)
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", action="store_true")
    a, rest = ap.parse_known_args()
    rest = [x for x in rest if x != "--"]

    run = {"dataset": a.dataset,
           "train": {"backbone": a.backbone, "weights": a.weights, "image_size": a.image_size, "epochs": a.epochs,
                     "batch_size": a.batch_size, "lr": a.lr, "alpha": a.alpha, "omega": a.omega, "aux_norm": a.aux_norm,
                     "patience": a.patience if a.patience is not None else a.epochs,
                     "trainable_blocks": a.trainable_blocks},
           "cf": {"dim": a.cf_dim}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="compare-methods-", delete=False) as f:
        yaml.safe_dump(run, f)
    cmd = [sys.executable, "-m", "raysearch.cli", "experiment", "--dataset", a.dataset, "--config", f.name,
           "--variants", a.variants, "--folds", str(a.folds), "--seeds", str(a.seeds), "--label-ratios", a.label_ratios,
           "--shuffle-control", a.shuffle_control, *(["--out", a.out] if a.out else []),
           *(["--data-root", a.data_root] if a.data_root else []), *(["--json"] if a.json else []), *rest]
    print("$ raysearch " + " ".join(cmd[3:]), file=sys.stderr, flush=True)
    try:
        sys.exit(subprocess.call(cmd))
    finally:
        Path(f.name).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
