"""Cost of one full fine-tuning step per backbone, side by side in one run (the default-backbone choice).

The backbones' steps are interleaved round by round in one process, so a busy machine slows them
alike and the ratio to the first backbone stays meaningful even when the absolute times do not.

    python bench/bench_backbone_step.py --image-size 64 --batch-size 32 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from raysearch.model.backbones import create_backbone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="resnet18,efficientnet_lite0,mobilenet_v3_small")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per backbone (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    names = a.backbones.split(",")
    models = {n: create_backbone(n, "none").train() for n in names}  # random init: same cost, no weights needed
    opts = {n: torch.optim.AdamW(m.parameters(), 1e-3) for n, m in models.items()}
    x = torch.randn(a.batch_size, 3, a.image_size, a.image_size)
    times: dict[str, list[float]] = {n: [] for n in names}
    for step in range(a.steps + 2):
        for n in names:
            t0 = time.perf_counter()
            loss = models[n](x).pow(2).mean()
            opts[n].zero_grad()
            loss.backward()
            opts[n].step()
            if step >= 2:
                times[n].append(time.perf_counter() - t0)
    ref = statistics.median(times[names[0]])
    print(f"{'backbone':20s} {'median step':>12s} {'vs ' + names[0]:>14s}   "
          f"({a.image_size} px, batch {a.batch_size}, {a.threads} thread(s), {a.steps} steps)")
    for n in names:
        med = statistics.median(times[n])
        print(f"{n:20s} {med * 1000:10.0f} ms {med / ref:13.2f}x")


if __name__ == "__main__":
    main()
