"""VAECF at the paper's MovieLens scale (10M interactions, 68k users x 10.7k items) on this machine.

Generates a binary users x items matrix with power-law item popularity (Zipf) and
log-normal user activity, straight into CSR (never dense), hands it to Cornac
through ``raysearch.cf.base.to_cornac`` (the arrays go to ``cornac.data.Dataset``'s
constructor; no Python tuples) and fits our ``BiasedVAECF`` for ``--epochs``.
Cornac's VAECF densifies only its own mini-batches (``batch_size x n_items``).

Prints wall time and peak RSS per phase, next to the size a dense users x items
float32 copy would have, and (``--compare-build N``) the time/memory of our CSR
constructor path vs ``cornac.data.Dataset.from_uir`` on the first N interactions,
measured in the same run.

    python bench/bench_cf_scale.py                       # full size, 1 epoch
    python bench/bench_cf_scale.py --interactions 1000000 --users 6800 --items 10700
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class PhasePeak:
    """Peak resident memory *within* a phase (ru_maxrss only gives the process-wide maximum so far):
    a daemon thread samples /proc/self/statm every 20 ms; torch's allocations are seen too."""

    def __enter__(self) -> "PhasePeak":
        import threading

        self.start = self.peak = rss_now_mb()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, rss_now_mb())

        self._t = threading.Thread(target=sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_now_mb())

    def __str__(self) -> str:
        return f"phase peak RSS {self.peak:6.0f} MB (+{self.peak - self.start:5.0f} MB over its start)"


def generate(n_users: int, n_items: int, n_inter: int, zipf: float, seed: int, cap: float = 0.5) -> sp.csr_matrix:
    """Distinct (user, item) pairs: Zipf item degrees (capped at ``cap`` of the users, like
    MovieLens' most rated films), users drawn by log-normal activity; deduplicated and topped up
    per item, so the work stays O(interactions) and nothing is ever dense."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** zipf
    pop = pop[rng.permutation(n_items)]
    pop /= pop.sum()
    limit = cap * n_users
    deg = pop * n_inter
    for _ in range(50):  # water-filling: spread the excess of capped items over the others
        over = deg > limit
        excess = (deg[over] - limit).sum()
        if excess < 1:
            break
        deg[over] = limit
        deg[~over] += excess * pop[~over] / pop[~over].sum()
    deg = np.maximum(1, np.round(deg)).astype(np.int64)
    act = np.exp(0.8 * rng.standard_normal(n_users))
    act /= act.sum()
    keys = np.empty(0, dtype=np.int64)
    for _ in range(30):
        got = np.bincount(keys % n_items, minlength=n_items)
        deficit = np.maximum(deg - got, 0)
        if deficit.sum() <= 0.001 * n_inter:
            break
        draw = np.ceil(deficit * 1.1 / np.maximum(1 - got / n_users, 0.05)).astype(np.int64)
        items = np.repeat(np.arange(n_items, dtype=np.int64), draw)
        users = rng.choice(n_users, size=len(items), p=act)
        keys = np.unique(np.concatenate([keys, users * n_items + items]))
        del items, users
    if len(keys) > n_inter:
        keys = np.sort(rng.choice(keys, size=n_inter, replace=False))
    rows, cols = np.divmod(keys, n_items)
    del keys
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=68_000)
    ap.add_argument("--items", type=int, default=10_700)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--hidden", type=str, default="256")
    ap.add_argument("--zipf", type=float, default=0.9, help="item popularity exponent")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--compare-build", type=int, default=1_000_000,
                    help="interactions for the to_cornac vs Dataset.from_uir comparison (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--matrix", type=str, default=None,
                    help="an .npz to load the generated matrix from (written there first if missing)")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from raysearch.cf import base
    from raysearch.cf.vaecf import VAECFModel
    from raysearch.config import CFConfig

    dense_gb = a.users * a.items * 4 / 1e9
    print(f"# VAECF scale bench: {a.users:,} users x {a.items:,} items, {a.interactions:,} interactions, "
          f"{a.epochs} epoch(s), batch {a.batch_size}, dim {a.dim}, hidden {a.hidden}, torch threads {a.threads}, "
          f"cpus {os.cpu_count()} (shared: timings include contention)")
    print(f"# a dense float32 users x items copy would be {dense_gb:.2f} GB")
    base_rss = rss_peak_mb()

    t0 = time.perf_counter()
    with PhasePeak() as pk_gen:
        if a.matrix and os.path.exists(a.matrix):
            m = sp.load_npz(a.matrix).tocsr()
            if m.shape != (a.users, a.items) or m.nnz != a.interactions:
                sys.exit(f"{a.matrix}: shape {m.shape}, nnz {m.nnz} do not match the options")
        else:
            m = generate(a.users, a.items, a.interactions, a.zipf, a.seed)
            if a.matrix:
                sp.save_npz(a.matrix, m, compressed=False)
    t_gen = time.perf_counter() - t0
    csr_mb = (m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 1e6
    pop = np.asarray((m > 0).sum(0)).ravel()
    print(f"generate     {t_gen:8.1f} s   {pk_gen}   CSR {csr_mb:.0f} MB, nnz {m.nnz:,}, "
          f"density {m.nnz / (a.users * a.items):.4f}, item pop max/median {pop.max()}/{int(np.median(pop))}")

    if a.compare_build:
        from cornac.data import Dataset as CornacDataset

        sub = m[: max(1, int(a.users * a.compare_build / max(1, m.nnz)))]
        n = sub.nnz
        gc.collect()
        tracemalloc.start()
        t0 = time.perf_counter()
        base.to_cornac(sub).train_set.csr_matrix
        t_ours = time.perf_counter() - t0
        peak_ours = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        coo = sub.tocoo()
        gc.collect()
        tracemalloc.start()
        t0 = time.perf_counter()
        uir = [(str(u), str(i), 1.0) for u, i in zip(coo.row.tolist(), coo.col.tolist())]
        CornacDataset.from_uir(uir).csr_matrix
        t_uir = time.perf_counter() - t0
        peak_uir = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        del uir, coo, sub
        gc.collect()
        print(f"build {n:,} interactions: to_cornac {t_ours:.2f} s / {peak_ours:.0f} MB traced   vs   "
              f"Dataset.from_uir(tuples) {t_uir:.2f} s / {peak_uir:.0f} MB traced   "
              f"-> {t_uir / max(t_ours, 1e-9):.1f}x time, {peak_uir / max(peak_ours, 1e-9):.1f}x memory")

    t0 = time.perf_counter()
    with PhasePeak() as pk_build:
        data = base.to_cornac(m, seed=a.seed)
        _ = data.train_set.matrix  # Cornac builds its CSR once; VAECF slices batches from it
    t_build = time.perf_counter() - t0
    print(f"to_cornac    {t_build:8.1f} s   {pk_build}   ({data.n_users:,} users x "
          f"{data.n_items:,} items kept)")

    hidden = tuple(int(h) for h in a.hidden.split(",") if h.strip())
    cfg = CFConfig(model="vaecf", dim=a.dim, hidden=hidden, epochs=a.epochs, batch_size=a.batch_size, seed=a.seed)
    model = VAECFModel(cfg)
    t0 = time.perf_counter()
    with PhasePeak() as pk_fit:
        model.fit(data)
    t_fit = time.perf_counter() - t0
    vec, bias = model.item_vectors()
    print(f"fit VAECF    {t_fit:8.1f} s   {pk_fit}   ({t_fit / a.epochs:.1f} s/epoch, "
          f"{a.interactions / (t_fit / a.epochs) / 1e6:.2f} M interactions/s)")
    print(f"item vectors {vec.shape} + bias {None if bias is None else bias.shape}, finite: "
          f"{bool(np.isfinite(vec).all())}")
    peak = rss_peak_mb()
    print(f"# process peak RSS {peak:.0f} MB (interpreter+imports at start {base_rss:.0f} MB) = "
          f"{peak / 1e3 / dense_gb:.2f}x the dense matrix size; VAECF fit added "
          f"{pk_fit.peak - pk_fit.start:.0f} MB = {(pk_fit.peak - pk_fit.start) / 1e3 / dense_gb:.3f}x it; total "
          f"{t_gen + t_build + t_fit:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
