"""Epoch time: reading the uint8 image cache vs decoding + resizing the JPEGs every epoch.

Both pipelines feed identical batches through the same batch transform
(``train_batch``: random resized crop + flip + normalisation), single-threaded,
in one process and one run, so the printed ratio is what the cache buys per epoch.
The one-off cache build is timed separately (and the break-even epoch count printed).

Data: the real MovieLens posters, read in place (never copied into the repo):
either a prepared dataset (``--dataset movielens``) or a posters folder
(default ``../shared/data/movielens-posters/posters``), which is wrapped in a
throw-away canonical folder whose ``posters`` entry is a symlink.

    python bench/bench_image_cache.py --size 64 --size 128 --epochs 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raysearch.data import load_dataset, load_folder, write_dataset
from raysearch.data.images import decode_image, eval_batch, image_cache_path, load_image_cache, train_batch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POSTERS = REPO.parent / "shared" / "data" / "movielens-posters" / "posters"


def wrap_posters(posters: Path, limit: int | None, tmp: Path):
    """A canonical folder over the posters (symlinked, not copied); labels are irrelevant here."""
    files = sorted(posters.glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))
    if limit:
        files = files[:limit]
    if not files:
        raise SystemExit(f"no *.jpg under {posters}")
    root = tmp / "posters-ds"
    root.mkdir()
    (root / "posters").symlink_to(posters.resolve(), target_is_directory=True)
    items = pd.DataFrame({"item_id": [p.stem for p in files], "image": [f"posters/{p.name}" for p in files],
                          "labels": [[] for _ in files]})
    inter = pd.DataFrame({"user_id": pd.Series([], dtype=str), "item_id": pd.Series([], dtype=str)})
    return load_folder(write_dataset(root, items, inter, name="posters-bench", source="bench"))


def epoch_decode(ds, size: int, order: np.ndarray, bs: int, gen: torch.Generator) -> float:
    t = time.perf_counter()
    for s in range(0, len(order), bs):
        x = np.stack([decode_image(ds.image_path(int(i)), size) for i in order[s:s + bs]])
        train_batch(torch.from_numpy(x), gen)
    return time.perf_counter() - t


def epoch_cache(cache: np.ndarray, order: np.ndarray, bs: int, gen: torch.Generator | None) -> float:
    t = time.perf_counter()
    for s in range(0, len(order), bs):
        idx = np.sort(order[s:s + bs])  # sorted fancy index: sequential-ish page access
        x = torch.from_numpy(cache[idx])
        train_batch(x, gen) if gen is not None else eval_batch(x)
    return time.perf_counter() - t


def legacy_train_batch(x, generator=None, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), flip=0.5):
    """The transform before issue 13: normalise to float, then one affine_grid/grid_sample."""
    x = eval_batch(x)
    n = x.shape[0]
    r = torch.rand(n, 5, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * r[:, 0]
    aspect = torch.exp(np.log(ratio[0]) + (np.log(ratio[1]) - np.log(ratio[0])) * r[:, 1])
    w, h = torch.sqrt(area * aspect).clamp(max=1.0), torch.sqrt(area / aspect).clamp(max=1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * torch.where(r[:, 4] < flip, -1.0, 1.0)
    theta[:, 0, 2] = (2 * r[:, 2] - 1) * (1 - w)
    theta[:, 1, 1] = h
    theta[:, 1, 2] = (2 * r[:, 3] - 1) * (1 - h)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def map_check(seeds: list[int]) -> None:
    """Train-run mAP on ``synthetic`` (image_only, mobilenet_v3_small, random init, 64 px, 5 epochs) with the
    legacy float transform vs the current uint8 one, per seed, in this process."""
    import raysearch.data.images as images
    from raysearch.config import RunConfig, TrainConfig
    from raysearch.train import fit, prepare_training_data

    current = images.train_batch
    for seed in seeds:
        for label, tb in (("legacy grid_sample", legacy_train_batch), ("uint8 crop (now)", current)):
            images.train_batch = tb  # fit() imports it at call time
            run = RunConfig(dataset="synthetic", train=TrainConfig(
                method="image_only", backbone="mobilenet_v3_small", weights="none", image_size=64, epochs=5,
                patience=0, seed=seed))
            r = fit(run, prepare_training_data(run), progress=False)
            print(f"seed {seed} {label:<20} best val mAP {r.best_val_map:.4f}  test mAP {r.test_map:.4f}", flush=True)
    images.train_batch = current


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, action="append", help="image side in px (repeatable; default 64 and 128)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--posters", type=Path, default=DEFAULT_POSTERS)
    ap.add_argument("--dataset", default=None, help="a prepared dataset name/folder instead of --posters")
    ap.add_argument("--data-root", default=None, help="where the cache goes (default: a temp dir, removed)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (shared machines: keep 1)")
    ap.add_argument("--map-check", type=str, default=None,
                    help="comma-separated seeds: only compare train-run mAP on synthetic, legacy vs current transform")
    args = ap.parse_args()
    sizes = args.size or [64, 128]
    torch.set_num_threads(args.threads)
    if args.map_check:
        map_check([int(s) for s in args.map_check.split(",")])
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-image-cache-"))
    data_root = args.data_root or str(tmp / "home")
    try:
        if args.dataset:
            ds = load_dataset(args.dataset, args.data_root)
            if args.limit:
                raise SystemExit("--limit applies to --posters only")
        else:
            ds = wrap_posters(args.posters, args.limit, tmp)
        n = ds.n_items
        print(f"images: {n} from {ds.image_path(0).parent.resolve()}  epochs: {args.epochs}  batch: {args.batch_size}  "
              f"torch threads: {torch.get_num_threads()}  cpus: {os.cpu_count()}  load avg: "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        header = (f"{'size':>5} {'build (1x)':>11} {'decode/epoch':>13} {'cache/epoch':>12} {'ratio':>7} "
                  f"{'cache eval/epoch':>17} {'ratio':>7} {'break-even':>11} {'cache MiB':>10}")
        rows = []
        for size in sizes:
            rng = np.random.default_rng(0)
            t = time.perf_counter()
            cache = load_image_cache(ds, size, data_root, on_error="skip", workers=1, progress=False)
            build = time.perf_counter() - t
            dec, cac, cev = [], [], []
            for e in range(args.epochs):  # interleaved, so contention hits both pipelines alike
                order = rng.permutation(n)
                dec.append(epoch_decode(ds, size, order, args.batch_size, torch.Generator().manual_seed(e)))
                cac.append(epoch_cache(cache, order, args.batch_size, torch.Generator().manual_seed(e)))
                cev.append(epoch_cache(cache, order, args.batch_size, None))
            d, c, v = np.median(dec), np.median(cac), np.median(cev)
            mib = image_cache_path(ds, size, data_root).stat().st_size / 2**20
            breakeven = build / max(d - c, 1e-9)
            rows.append(f"{size:>5} {build:>10.2f}s {d:>12.3f}s {c:>11.3f}s {d / c:>6.1f}x "
                        f"{v:>16.3f}s {d / v:>6.1f}x {breakeven:>10.1f}ep {mib:>10.1f}")
            del cache
        print(header)
        print("\n".join(rows))
        print("ratio = decode-every-epoch time / cache time (median over epochs; same train_batch transform; "
              "build = one-off decode+resize into the cache, single-threaded)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
