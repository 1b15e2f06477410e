"""Batch inference throughput: Ray Data with 1 vs 2 actor workers (and the in-process path).

Scores the same image files in-process, then with Ray Data at 1 and 2 workers (ABBA order, so a
drift in other load on the machine hits both alike) and prints images/s side by side, the load
average at each start, and the 2-vs-1 worker ratio.  Times are wall times of whole calls
(decode + model + Parquet shards + merged file, actor start-up included) on an already started
local Ray.

    RAYSEARCH_HOME=/tmp/home python bench/bench_predict.py --model MODEL_DIR --images DIR [--limit N]

``--images`` defaults to the prepared MovieLens posters (``<home>/datasets/movielens/images``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model directory / sweep run / exported file")
    ap.add_argument("--images", default=None, help="folder of images (default: the prepared movielens posters)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (>= 2 for two workers)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per worker count (2: ABBA order)")
    args = ap.parse_args()

    import ray
    import torch

    from raysearch import paths
    from raysearch.predict import collect_images, load_predictor, predict, predict_ray

    folder = Path(args.images) if args.images else paths.datasets_dir() / "movielens" / "images"
    images, _ = collect_images([folder])
    if args.limit:
        images = images[: args.limit]
    pred = load_predictor(args.model)
    print(f"{len(images)} images from {folder}; model {pred.info.backbone} {pred.info.image_size}px, "
          f"{pred.info.n_labels} labels; batch size {args.batch_size}; {os.cpu_count()} CPUs on the machine")
    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             _temp_dir=os.environ.get("RAY_TMPDIR", str(tmp / "ray")))
    rows = []
    try:
        torch.set_num_threads(1)
        t, load = time.perf_counter(), os.getloadavg()[0]
        local = predict(pred, paths=images, batch_size=args.batch_size)
        rows.append(("in-process (1 thread)", 0, len(local.table), time.perf_counter() - t, load))
        # ABBA order (1, 2, 2, 1 workers): a drift in the machine's other load hits both sides alike
        order = [1, 2, 2, 1] * max(1, args.repeats // 2) if args.repeats > 1 else [1, 2]
        for k, w in enumerate(order):
            t, load = time.perf_counter(), os.getloadavg()[0]
            res = predict_ray(pred, paths=images, out=tmp / f"r{k}.parquet", workers=w, batch_size=args.batch_size)
            rows.append((f"Ray Data, {w} worker(s)", w, len(res.table), time.perf_counter() - t, load))
            assert len(res.table) == len(local.table)
    finally:
        ray.shutdown()
    print(f"{'path':<24} {'images':>7} {'seconds':>8} {'images/s':>9} {'load avg':>9}")
    for name, _, n, s, load in rows:
        print(f"{name:<24} {n:>7} {s:>8.1f} {n / s:>9.1f} {load:>9.1f}")
    rate = {w: statistics.mean(n / s for _, ww, n, s, _ in rows if ww == w) for w in (1, 2)}
    print(f"ratio 2 workers / 1 worker (mean images/s): {rate[2] / rate[1]:.2f}x")


if __name__ == "__main__":
    main()
