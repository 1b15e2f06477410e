"""VAECF at the paper's MovieLens scale (10M interactions, 68k users x 10.7k items) on this machine.

Generates a binary users x items matrix with power-law item popularity (Zipf) and
log-normal user activity, straight into CSR (never dense), hands it to Cornac
through ``raysearch.cf.cornac_data.to_cornac`` (the arrays go to ``cornac.data.Dataset``'s
constructor; no Python tuples) and fits our ``BiasedVAECF`` for ``--epochs``.
Cornac's VAECF densifies only its own mini-batches (``batch_size x n_items``).

Prints wall time and peak RSS per phase, next to the size a dense users x items
float32 copy would have, and (``--compare-build N``) the time/memory of our CSR
constructor path vs ``cornac.data.Dataset.from_uir`` on the first N interactions,
measured in the same run.

    python bench/bench_cf_scale.py --matrix /tmp/ml10m.npz     # full size
    python bench/bench_cf_scale.py --interactions 1000000 --users 6800 --reference-scale 0
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


def generate_topics(n_users: int, n_items: int, n_inter: int, zipf: float, seed: int, topics: int = 32,
                    concentration: float = 0.1, mix: float = 0.3) -> sp.csr_matrix:
    """Like :func:`generate` but with something to learn beyond popularity: items belong to one
    of ``topics`` topics, each user has a Dirichlet(``concentration``) topic mixture; a draw
    picks a topic from the user's mixture and an item within it by Zipf popularity (with
    probability ``mix``: an item by global popularity).  Log-normal user activity; duplicate
    pairs dropped and topped up until exactly ``n_inter`` distinct pairs.  O(interactions)."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** zipf
    pop = pop[rng.permutation(n_items)]
    pop /= pop.sum()
    item_topic = rng.integers(0, topics, n_items)
    by_topic = [np.flatnonzero(item_topic == t) for t in range(topics)]
    cdf_topic = [np.cumsum(pop[it]) / pop[it].sum() for it in by_topic]
    cdf_all = np.cumsum(pop)
    theta_cdf = np.cumsum(rng.dirichlet(np.full(topics, concentration), n_users), axis=1)
    act = np.exp(0.8 * rng.standard_normal(n_users))
    act /= act.sum()
    keys = np.empty(0, dtype=np.int64)
    need = n_inter
    for _ in range(30):
        users = rng.choice(n_users, size=int(need * 1.1) + 1000, p=act)
        items = np.empty(len(users), dtype=np.int64)
        glob = rng.random(len(users)) < mix
        items[glob] = np.minimum(np.searchsorted(cdf_all, rng.random(glob.sum())), n_items - 1)
        loc = np.flatnonzero(~glob)
        topic = np.empty(len(loc), dtype=np.int64)
        for s in range(0, len(loc), 1_000_000):  # per-draw categorical from the user's mixture, in chunks
            u = users[loc[s:s + 1_000_000]]
            topic[s:s + len(u)] = (theta_cdf[u] < rng.random(len(u))[:, None]).sum(1).clip(max=topics - 1)
        for t in range(topics):
            sel = loc[topic == t]
            pick = np.minimum(np.searchsorted(cdf_topic[t], rng.random(len(sel))), len(by_topic[t]) - 1)
            items[sel] = by_topic[t][pick]
        keys = np.unique(np.concatenate([keys, users.astype(np.int64) * n_items + items]))
        need = n_inter - len(keys)
        if need <= 0:
            break
    if len(keys) > n_inter:
        keys = np.sort(rng.choice(keys, size=n_inter, replace=False))
    rows, cols = np.divmod(keys, n_items)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def popularity_auc(train: sp.csr_matrix, held: sp.csr_matrix, users: np.ndarray) -> float:
    """Cornac ``MostPop``'s AUC on the same held-out interactions (score = train popularity)."""
    import torch

    from raysearch.cf.models.vaecf.sparse import per_user_auc

    pop = torch.from_numpy(np.asarray(train.sum(0)).ravel().astype(np.float32))
    aucs = [per_user_auc(pop.expand(len(u), -1), train[u], held[u])
            for u in (users[s:s + 512] for s in range(0, len(users), 512))]
    return float(np.concatenate(aucs).mean())


def fit_and_score(m: sp.csr_matrix, held: sp.csr_matrix, eval_users: np.ndarray, cfg, seed: int) -> dict:
    """Fit ``cfg`` on ``m`` (our BiasedVAECF through the registry adapter) and score the held-out test."""
    from raysearch.cf.cornac_data import to_cornac
    from raysearch.cf.models.vaecf import VAECFModel
    from raysearch.cf.models.vaecf.sparse import heldout_auc

    data = to_cornac(m, seed=seed)
    # Cornac indexes only non-empty users/items: the test follows (held-out items nobody trained on are
    # unknown items, left out as RatioSplit(exclude_unknowns=True) does)
    m, held = m[data.users][:, data.items], held[data.users][:, data.items]
    eval_users = np.searchsorted(data.users, eval_users)
    model = VAECFModel(cfg)
    t0, c0 = time.perf_counter(), cpu_s()
    with PhasePeak() as pk:
        model.fit(data)
    out = {"wall": time.perf_counter() - t0, "cpu": cpu_s() - c0, "peak": pk}
    rec = model.recommender
    tl = rec.train_log
    out["epochs"] = len(tl.history) if tl else cfg.epochs
    out["best_epoch"] = tl.best_epoch if tl else cfg.epochs
    out["stopped_early"] = bool(tl and tl.stopped_early)
    out["val_auc"] = [round(h["val_auc"], 4) for h in tl.history if "val_auc" in h] if tl else []
    out["test_auc"] = heldout_auc(rec.vae, m, held, eval_users)
    vec, bias = model.item_vectors()
    out["finite"] = bool(np.isfinite(vec).all() and (bias is None or np.isfinite(bias).all()))
    return out


def describe(name: str, r: dict) -> str:
    return (f"{name:<34} wall {r['wall']:7.1f} s  cpu {r['cpu']:7.1f} s  {r['peak']}  epochs {r['epochs']:3d} "
            f"(best {r['best_epoch']}{', stopped early' if r['stopped_early'] else ''})  test AUC {r['test_auc']:.4f}")


def compare_loops(m: sp.csr_matrix, n_users: int, batch_sizes: list[int], seed: int) -> None:
    """Cornac's ``learn`` vs :func:`learn_sparse`, one epoch over the first ``n_users`` users, same
    initial model, interleaved; CPU seconds per 1,000 users (contention-proof) and the ratio."""
    import copy

    import torch
    from cornac.models.vaecf.vaecf import learn

    from raysearch.cf.cornac_data import to_cornac
    from raysearch.cf.models.vaecf.sparse import learn_sparse
    from raysearch.cf.models.vaecf.vae import BiasedVAE

    sub = m[:n_users]
    sub = sub[:, np.flatnonzero(np.diff(sub.tocsc().indptr))]
    ts = to_cornac(sub, seed=seed).train_set
    _ = ts.matrix
    torch.manual_seed(seed)
    v0 = BiasedVAE(64, [ts.num_items, 256], "tanh", "mult")
    for bs in batch_sizes:
        res = {}
        for kind in ("cornac", "sparse"):
            v = copy.deepcopy(v0)
            t0, c0 = time.perf_counter(), cpu_s()
            if kind == "cornac":
                learn(v, ts, 1, bs, 1e-3, 1.0, False)
            else:
                learn_sparse(v, ts, 1, bs, 1e-3, 1.0)
            res[kind] = (time.perf_counter() - t0, cpu_s() - c0)
        k = 1000 / ts.num_users
        (cw, cc), (sw, sc) = res["cornac"], res["sparse"]
        print(f"  batch {bs:5d}: Cornac learn {cc * k:6.2f} cpu-s/1k users (wall {cw * k:6.2f})   "
              f"learn_sparse {sc * k:6.2f} (wall {sw * k:6.2f})   -> {cc / sc:5.1f}x less CPU, {cw / sw:5.1f}x wall; "
              f"full epoch ~{sc * m.shape[0] / ts.num_users:6.1f} cpu-s")


def synthetic_auc() -> None:
    """The project's CF AUC check (``auc_table``: Cornac RatioSplit 20% + cornac.metrics.AUC) on the
    ``synthetic`` world: Cornac's loop vs ``learn_sparse`` at the CFConfig defaults, and with early stopping."""
    from raysearch.cf.evaluate import auc_table
    from raysearch.config import CFConfig, SplitConfig
    from raysearch.data import load_dataset, make_split

    ds = load_dataset("synthetic")
    split = make_split(ds, SplitConfig(seed=0))
    for cfg in (CFConfig(trainer="cornac"), CFConfig(), CFConfig(patience=3)):
        for row in auc_table(ds, split, [cfg], seed=0, baseline=cfg.trainer == "cornac"):
            print(f"synthetic {row.model:8s} trainer {cfg.trainer:6s} epochs<={cfg.epochs} patience {cfg.patience}: "
                  f"AUC {row.auc:.4f}  train {row.train_s:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=68_000)
    ap.add_argument("--items", type=int, default=10_700)
    ap.add_argument("--topics", type=int, default=32, help="latent topics of the generator (0: popularity only)")
    ap.add_argument("--epochs", type=int, default=30, help="fast fit: epoch cap")
    ap.add_argument("--batch-size", type=int, default=1024, help="fast fit: batch size")
    ap.add_argument("--patience", type=int, default=3, help="fast fit: early-stopping patience (0: off)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--hidden", type=str, default="256")
    ap.add_argument("--zipf", type=float, default=0.9, help="item popularity exponent")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--eval-users", type=int, default=5000,
                    help="users whose 20%% held-out interactions are the AUC test (hidden from every fit)")
    ap.add_argument("--compare-loops", type=int, default=4096,
                    help="users for the Cornac learn vs learn_sparse epoch comparison (0: skip)")
    ap.add_argument("--reference-scale", type=float, default=0.1,
                    help="users and interactions of the matrix on which the full-length reference (CFConfig "
                         "defaults: 100 epochs, batch 128, no early stopping) and the fast fit are compared (0: skip)")
    ap.add_argument("--full-reference", action="store_true",
                    help="also fit the full-length reference at full size (hours on 2 cores)")
    ap.add_argument("--compare-build", type=int, default=1_000_000,
                    help="interactions for the to_cornac vs Dataset.from_uir comparison (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="log every VAECF epoch (loss, held-out AUC)")
    ap.add_argument("--synthetic-auc", action="store_true",
                    help="only run the CF AUC check on the synthetic world (Cornac loop vs sparse vs early stopping)")
    ap.add_argument("--matrix", type=str, default=None,
                    help="an .npz to load the generated matrix from (written there first if missing)")
    a = ap.parse_args(argv)

    import logging

    import torch

    logging.basicConfig(format="  %(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("raysearch.cf").setLevel(logging.DEBUG if a.verbose else logging.WARNING)
    torch.set_num_threads(a.threads)
    os.environ["RAYSEARCH_CF_THREADS"] = str(a.threads)  # what the fit itself uses
    if a.synthetic_auc:
        synthetic_auc()
        return 0
    from raysearch.cf.cornac_data import to_cornac
    from raysearch.cf.models.vaecf.sparse import hold_out
    from raysearch.config import CFConfig

    dense_gb = a.users * a.items * 4 / 1e9
    print(f"# VAECF scale bench: {a.users:,} users x {a.items:,} items, {a.interactions:,} interactions "
          f"({'%d topics' % a.topics if a.topics else 'popularity only'}), dim {a.dim}, hidden {a.hidden}, "
          f"torch threads {a.threads}, cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f} "
          f"(shared: wall times include contention; cpu = process CPU seconds)")
    print(f"# a dense float32 users x items copy would be {dense_gb:.2f} GB")
    base_rss = rss_peak_mb()

    def make(users: int, inter: int, path: str | None) -> sp.csr_matrix:
        if path and os.path.exists(path):
            m = sp.load_npz(path).tocsr()
            if m.shape != (users, a.items) or m.nnz != inter:
                sys.exit(f"{path}: shape {m.shape}, nnz {m.nnz} do not match the options")
            return m
        gen = (lambda: generate_topics(users, a.items, inter, a.zipf, a.seed, a.topics)) if a.topics else \
            (lambda: generate(users, a.items, inter, a.zipf, a.seed))
        m = gen()
        if path:
            sp.save_npz(path, m, compressed=False)
        return m

    t0 = time.perf_counter()
    with PhasePeak() as pk_gen:
        m = make(a.users, a.interactions, a.matrix)
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
        to_cornac(sub).train_set.csr_matrix
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

    if a.compare_loops:
        print(f"one epoch over the first {a.compare_loops:,} users, same model and batches:")
        compare_loops(m, a.compare_loops, sorted({128, a.batch_size}), a.seed)

    hidden = tuple(int(h) for h in a.hidden.split(",") if h.strip())
    fast = CFConfig(model="vaecf", dim=a.dim, hidden=hidden, epochs=a.epochs, batch_size=a.batch_size,
                    patience=a.patience, seed=a.seed)
    ref = CFConfig(model="vaecf", dim=a.dim, hidden=hidden, seed=a.seed)  # the defaults: full length
    print(f"fast fit: epochs <= {fast.epochs}, batch {fast.batch_size}, patience {fast.patience}, trainer {fast.trainer};"
          f"  reference: epochs {ref.epochs}, batch {ref.batch_size}, patience {ref.patience}, trainer {ref.trainer}")
    # the AUC test: 20% of the interactions of --eval-users users, hidden from every fit
    train, test, eval_users = hold_out(m, a.eval_users, 0.2, a.seed + 1)
    print(f"AUC test: {test.nnz:,} held-out interactions of {len(eval_users):,} users; MostPop AUC "
          f"{popularity_auc(train, test, eval_users):.4f}")
    r = fit_and_score(train, test, eval_users, fast, a.seed)
    print(describe("fast fit, full size", r), flush=True)
    print(f"  held-out AUC per epoch (early stopping's validation users): {r['val_auc']}")
    if a.full_reference:
        print(describe("reference, full size", fit_and_score(train, test, eval_users, ref, a.seed)))
    if a.reference_scale:
        ru, ri = int(a.users * a.reference_scale), int(a.interactions * a.reference_scale)
        small = make(ru, ri, None)
        s_train, s_test, s_users = hold_out(small, min(a.eval_users, small.shape[0] // 4), 0.2, a.seed + 1)
        print(f"reference scale {a.reference_scale}: {small.shape[0]:,} users x {small.shape[1]:,} items, "
              f"{small.nnz:,} interactions; AUC test {s_test.nnz:,} interactions of {len(s_users):,} users, MostPop "
              f"{popularity_auc(s_train, s_test, s_users):.4f}")
        rf = fit_and_score(s_train, s_test, s_users, ref, a.seed)
        rs = fit_and_score(s_train, s_test, s_users, fast, a.seed)
        print(describe("  reference (full length)", rf))
        print(describe("  fast fit", rs))
        print(f"  fast - reference test AUC: {rs['test_auc'] - rf['test_auc']:+.4f}   "
              f"time {rf['cpu'] / rs['cpu']:.1f}x less CPU")
    peak = rss_peak_mb()
    print(f"# process peak RSS {peak:.0f} MB (interpreter+imports at start {base_rss:.0f} MB); dense matrix "
          f"{dense_gb:.2f} GB; item vectors finite: {r['finite']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
