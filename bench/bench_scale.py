"""Cost as data grows (issue 21, row (e)): synthetic worlds of 10k, 30k and 100k items at 64 px, in one run.

Per size, in a temporary ``RAYSEARCH_HOME`` (no preset is registered: the world is the ``synthetic``
preset's spec with ``n_items``/``n_users``/``image_size`` changed, built by the same code a first
use of a built-in world runs, :func:`raysearch.data.registry.build_synthetic`, into
``<home>/datasets/<name>``, where ``load_dataset(name)`` and the sweep find it by name):

1. **prepare**: generation (latent world + interactions), rendering and writing the PNGs and the
   tables (the content fingerprint reads every image back), per 10k items; ``generate()`` and
   ``render()`` are also shown on their own;
2. **image cache**: ``load_image_cache`` at ``--image-size`` (decode every PNG once into the uint8
   ``.npy``), per 10k items;
3. **memory**: a fresh local Ray instance, then the same sweep (``run_sweep``; tiny_cnn trained end to
   end, ``image_only`` on the labelled train items, ``--label-ratio`` of them, ``--epochs`` epoch(s),
   random search, no scheduler) with 1 trial at a time and with 2 concurrent trials.  Memory is the
   sum of PSS over this run's own ``ray::`` worker processes (the ``MemorySampler`` of
   ``bench_search.py``, restricted to the descendants of this process: other users' Ray instances on
   the machine are not counted), at its peak once the trials read their images; the sweep's overall
   peak is printed too (it is the data owner's ``ray.put``: the mapped cache file and its object-store
   copy resident in the owner at once, before any trial runs).  The object store's footprint is what
   the raylet's plasma file (tmpfs) really holds at its peak: what the data owner ``ray.put``\\ s (the
   image array and the small per-config parts).  The per-process breakdown (private heap
   ``Pss_Anon``, shared libraries ``Pss_File``, object-store pages ``Pss_Shmem``) says what a second
   trial costs.
4. **the engine's floor** (``--no-floor`` skips it): plain Ray Tune in the same Ray instance, no
   raysearch code: function trials that import torch, map the same image array zero-copy from the
   object store (put by a plain actor, as the engine's owner puts it) and train tiny_cnn's layers
   one epoch on as many items, 1 vs 2 concurrent.  What its second trial adds is the price of one more trial process (torch's and Ray
   Tune's imports, a model, batches), which no sharing of the images removes; the table shows the
   engine's ratio next to the ratio it would have if its second trial cost only that.

The goal of the row: prepare and cache time per 10k items flat in size; 2 concurrent trials use
<= 1.2x the memory of 1 (the images are mapped zero-copy from the object store, not copied).

The world keeps ``--users`` users at every size (default 5000: the preset's 0.5 users per item at
10k items).  Why not users proportional to items: each user samples its items from a softmax over
*all* items (Gumbel top-k), so generating interactions costs O(users x items); with users growing
with items that is quadratic (measured: 3.9 s at 10k items / 5k users, 47.7 s at 30k / 15k; 100k /
50k would be ~9 min).  ``--users 0`` scales users with items to see it.

    nice -n 10 python bench/bench_scale.py                      # 10k, 30k, 100k at 64 px
    nice -n 10 python bench/bench_scale.py --items 10000 30000 --users 0

Measured: the default command takes ~8-11 min on the 2-core reference machine (quiet: 452 s without
the floor, 485 s with it; 652 s without it under load up to ~14 from other jobs); prepare + cache of
the 100k world is ~3 min of it, the 100k sweeps ~2 min.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# before Ray or raysearch is imported: bench_search sets the environment defaults (W&B offline, no usage
# stats, no Ray auth, no Tune auto loggers, OMP_NUM_THREADS=1) on import
from bench_search import MemorySampler  # noqa: E402

MIB = 2 ** 20
SMAPS_FIELDS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Private_Clean", "Private_Dirty")


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])  # the name may hold spaces and ')'


def _descends_from(pid: int, root: int) -> bool:
    try:
        while pid > 1:
            pid = _ppid(pid)
            if pid == root:
                return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def _role(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "gone"
    if cmd.startswith("ray::SharedData"):
        return "owner"
    if cmd.startswith("ray::ImplicitFunc"):
        return "trial"
    return cmd.split(" ")[0][:40]


def _plasma_file(raylet: int) -> Path | None:
    """The raylet's object-store file (``/dev/shm/plasma*``, deleted once mapped), via its fd."""
    for fd in Path(f"/proc/{raylet}/fd").iterdir():
        try:
            if "plasma" in os.readlink(fd):
                return fd
        except OSError:
            continue
    return None


class ScaleSampler(MemorySampler):
    """``bench_search.MemorySampler`` restricted to this process's Ray workers; each poll also reads
    the object store's footprint (tmpfs blocks of the plasma file) and keeps the per-process
    breakdown of the poll with the largest total PSS, overall and in the training phase: from the
    first poll in which a trial process has read its images (its share of object-store pages is at
    least 5% of the image array: a worker maps a few small objects before, the trainable's among them) on.  The
    overall peak is usually the data owner's ``ray.put``: the memory-mapped cache file's pages and
    their copy in the object store, both resident in the owner for a moment, before any trial reads.
    The previous sweep's trial and owner processes, which may still be exiting, are left out."""

    def __init__(self, raylet: int, image_bytes: int, interval: float = 0.25) -> None:
        super().__init__(interval)
        me = os.getpid()
        # the previous sweep's trial and owner processes, still exiting: not this sweep's memory (a
        # dying trial that had read the old images would also start the training phase at once,
        # putting this sweep's owner's ray.put inside it); a prestarted idle worker that becomes this
        # sweep's owner or trial was ``ray::IDLE`` here, so it is counted
        self._leftover = {p for p in super()._ray_workers() if _descends_from(p, me) and _role(p) in ("owner", "trial")}
        self._reading = 0.05 * image_bytes
        self._plasma = _plasma_file(raylet)
        self.peak_store = 0
        self.at_peak: dict[int, tuple[str, dict[str, int]]] = {}
        self._poll: dict[int, tuple[str, dict[str, int]]] = {}
        self._poll_peak = -1
        self._training = False
        self.peak_train = 0
        self.at_train_peak: dict[int, tuple[str, dict[str, int]]] = {}

    def _ray_workers(self) -> list[int]:  # called once per poll, before the poll's _smaps calls
        self._close_poll()
        if self._plasma is not None:
            with contextlib.suppress(OSError):
                self.peak_store = max(self.peak_store, os.stat(self._plasma).st_blocks * 512)
        me = os.getpid()
        return [p for p in super()._ray_workers() if p not in self._leftover and _descends_from(p, me)]

    def _smaps(self, pid: int) -> tuple[int, int]:
        f = dict.fromkeys(SMAPS_FIELDS, 0)
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in f:
                f[k] = int(v.split()[0]) * 1024
        f["USS"] = f["Private_Clean"] + f["Private_Dirty"]
        self._poll[pid] = (_role(pid), f)
        return f["Pss"], f["USS"]

    def _close_poll(self) -> None:
        total = sum(f["Pss"] for _, f in self._poll.values())
        if self._poll and total > self._poll_peak:
            self._poll_peak, self.at_peak = total, dict(self._poll)
        self._training = self._training or any(r == "trial" and f["Pss_Shmem"] >= self._reading
                                                for r, f in self._poll.values())
        if self._training and total > self.peak_train:
            self.peak_train, self.at_train_peak = total, dict(self._poll)
        self._poll = {}

    def __exit__(self, *a) -> None:
        super().__exit__(*a)
        self._close_poll()


class Timed:
    """Cumulative wall time of a module function while patched (``generate``/``render`` inside ``build_world``)."""

    def __init__(self, module, name: str) -> None:
        self.module, self.name, self.s = module, name, 0.0
        self.orig = getattr(module, name)

    def __enter__(self) -> "Timed":
        @functools.wraps(self.orig)
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return self.orig(*a, **kw)
            finally:
                self.s += time.perf_counter() - t0

        setattr(self.module, self.name, timed)
        return self

    def __exit__(self, *a) -> None:
        setattr(self.module, self.name, self.orig)


def _space_file(out: Path, image_size: int, epochs: int, label_ratio: float) -> str:
    import yaml

    data = {"description": "bench_scale: tiny_cnn end to end, image_only (no CF fit: the memory is the images')",
            "base": {"split": {"label_ratio": label_ratio},
                     "train": {"method": "image_only", "backbone": "tiny_cnn", "weights": "none",
                               "image_size": image_size, "epochs": epochs, "batch_size": 64, "patience": 1}},
            "params": {"train.lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-3, "log": True}}}
    p = out / "space-scale.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(p)


def prepare_part(n: int, args) -> dict:
    """Build the world of ``n`` items and its image cache; times in seconds."""
    from raysearch.data import synthetic
    from raysearch.data.images import load_image_cache
    from raysearch.data.registry import DatasetSource, build_synthetic, dataset_dir, load_dataset

    users = args.users or max(1, round(n * 400 / 800))
    spec = dataclasses.replace(synthetic.PRESETS["synthetic"][0], n_items=n, n_users=users,
                               image_size=args.image_size)
    name = f"bench-scale-{n}"
    src = DatasetSource(name, "synthetic", lambda d: synthetic.build_world(spec, d, name=name))
    t0 = time.perf_counter()
    with Timed(synthetic, "generate") as gen, Timed(synthetic, "render") as ren:
        build_synthetic(src, dataset_dir(name))
    t1 = time.perf_counter()
    ds = load_dataset(name)
    t2 = time.perf_counter()
    images = load_image_cache(ds, args.image_size, progress=False)
    t3 = time.perf_counter()
    r = {"name": name, "users": users, "interactions": len(ds.interactions), "prepare": t1 - t0,
         "generate": gen.s, "render": ren.s, "load": t2 - t1, "cache": t3 - t2, "image_bytes": images.nbytes}
    print(f"  {n} items, {users} users, {r['interactions']} interactions: prepare {r['prepare']:.1f} s (generate "
          f"{gen.s:.1f} s, render {ren.s:.1f} s, PNGs + tables + fingerprint {r['prepare'] - gen.s - ren.s:.1f} s), "
          f"load {r['load']:.1f} s, image cache {r['cache']:.1f} s; load avg {os.getloadavg()[0]:.2f}", flush=True)
    return r


def memory_part(n: int, name: str, image_bytes: int, args, out: Path) -> dict:
    """1 vs 2 concurrent trials in a fresh Ray instance: peak PSS, object store, breakdown at the peak."""
    import ray

    from raysearch.search.shared import DATA_CPUS
    from raysearch.search.tune import SweepConfig, run_sweep

    ray.init(num_cpus=args.cpus + DATA_CPUS, include_dashboard=False, log_to_driver=False, namespace="raysearch",
             configure_logging=False)
    try:
        raylet = next(p for p in (int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit())
                      if _safe_ppid(p) == os.getpid() and b"raylet" in _cmd(p))
        space = _space_file(out, args.image_size, args.epochs, args.label_ratio)
        res = {}
        for k in (1, 2):
            with ScaleSampler(raylet, image_bytes) as ms:
                r = run_sweep(SweepConfig(dataset=name, space=space, trials=k, max_concurrent=k, scheduler="none",
                                          search="random", seed=3, wandb=False, name=f"mem-{n}-{k}",
                                          storage=str(out / "runs")))
            res[k] = {"pss": ms.peak_train, "overall": ms.peak_pss, "store": ms.peak_store,
                      "at_peak": ms.at_train_peak, "at_overall": ms.at_peak,
                      "wall": r.wall_time_s, "trials": len(r.results),
                      "train_s": float(r.results["train_time_s"].sum())}
            print(f"  {n} items, {k} concurrent: peak PSS training {ms.peak_train / MIB:.0f} MiB, overall "
                  f"{ms.peak_pss / MIB:.0f} MiB, object store "
                  f"{ms.peak_store / MIB:.0f} MiB, sweep {r.wall_time_s:.1f} s ({len(r.results)} trial(s), "
                  f"training {res[k]['train_s']:.1f} s); load avg {os.getloadavg()[0]:.2f}", flush=True)
        if args.floor:
            res["floor"] = floor_part(n, name, image_bytes, raylet, args, out)
        return res
    finally:
        ray.shutdown()


def _floor_trial(config, images_ref=None, labels=None):
    """Plain Ray Tune's trial: torch, the images mapped zero-copy from the object store, tiny_cnn's
    layers trained one epoch on as many items as the engine's trials train on; no raysearch code."""
    import numpy as np
    import ray
    import torch
    from ray import tune
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])
    images = ray.get(images_ref[0])  # read-only, zero-copy

    def blk(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    model = nn.Sequential(blk(3, 8), blk(8, 16), blk(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, labels.shape[1]))
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    items = np.random.default_rng(config["seed"]).permutation(len(images))[:config["items"]]
    loss = torch.tensor(float("nan"))
    for start in range(0, len(items), 64):
        idx = np.sort(items[start:start + 64])
        x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float().div_(255)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), torch.from_numpy(labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    tune.report({"loss": float(loss)})


def floor_part(n: int, name: str, image_bytes: int, raylet: int, args, out: Path) -> dict:
    """The engine's floor for the same memory: plain Ray Tune trials (a fresh trial process each,
    torch imported, the same image array shared zero-copy through the object store, the same CNN
    trained on as many items), 1 vs 2 concurrent, measured as the engine's sweeps are.  The array
    is put by a plain Ray actor that lives through both runs, as the engine's data owner does: a
    counted worker, so its share of the image pages stays in the sum (put by this driver, which
    is not counted, a second trial would take over part of the driver's share and look like new
    memory).  What the floor's second trial adds is the price of one more trial process, which no
    sharing of the images removes."""
    import numpy as np
    import ray
    from ray import tune

    from raysearch.search.tune import _auto_loggers  # the JSON logger Tune's results need

    @ray.remote(num_cpus=0)
    class FloorImages:
        def __init__(self, dataset: str, size: int) -> None:
            from raysearch.data import load_dataset
            from raysearch.data.images import load_image_cache

            ds = load_dataset(dataset)
            self.ref = ray.put(np.asarray(load_image_cache(ds, size, progress=False)))
            self.labels, self.n = ds.label_matrix, ds.n_items

        def get(self):
            return [self.ref], self.labels, self.n  # the ref in a list: handed on, not fetched here

    holder = FloorImages.remote(name, args.image_size)
    try:
        images_ref, labels, n_items = ray.get(holder.get.remote())
        items = max(1, int(round(n_items * 0.7 * args.label_ratio)))  # ~ the engine's labelled train items
        trainable = tune.with_parameters(_floor_trial, images_ref=images_ref, labels=labels)
        res = {}
        for k in (1, 2):
            with ScaleSampler(raylet, image_bytes) as ms:
                tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                           param_space={"lr": tune.grid_search([1e-3, 2e-3][:k]), "seed": 3, "items": items},
                           tune_config=tune.TuneConfig(max_concurrent_trials=k),
                           run_config=tune.RunConfig(name=f"floor-{n}-{k}", storage_path=str(out / "runs"), verbose=0,
                                                     callbacks=_auto_loggers([]))).fit()
            res[k] = {"pss": ms.peak_train, "at_peak": ms.at_train_peak}
            print(f"  {n} items, plain Tune floor, {k} concurrent: peak PSS training {ms.peak_train / MIB:.0f} MiB; "
                  f"load avg {os.getloadavg()[0]:.2f}", flush=True)
        return res
    finally:
        ray.kill(holder)


def _cmd(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _safe_ppid(pid: int) -> int:
    try:
        return _ppid(pid)
    except (OSError, ValueError, IndexError):
        return -1


def _breakdown(at_peak: dict[int, tuple[str, dict[str, int]]]) -> str:
    rows = sorted(at_peak.values(), key=lambda r: (r[0] != "owner", r[0] != "trial", r[0]))
    return "; ".join(f"{role} PSS {f['Pss'] / MIB:.0f} (anon {f['Pss_Anon'] / MIB:.0f}, file {f['Pss_File'] / MIB:.0f}, "
                     f"shmem {f['Pss_Shmem'] / MIB:.0f}, USS {f['USS'] / MIB:.0f})" for role, f in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[10000, 30000, 100000])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--users", type=int, default=5000,
                    help="users at every size (0: the synthetic preset's 0.5 users per item, a quadratic generator)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per trial of the memory sweeps")
    ap.add_argument("--label-ratio", type=float, default=0.3,
                    help="split.label_ratio of the memory sweeps (image_only trains on the labelled train items)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs for trials (the data owner gets one more)")
    ap.add_argument("--out", default=None, help="keep everything here (default: a temp folder, removed at the end)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip plain Ray Tune's floor (the same images and CNN without raysearch)")
    args = ap.parse_args()

    t_start = time.perf_counter()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ["RAYSEARCH_HOME"] = str(out / "home")  # before raysearch reads it; the data owner inherits it
    rows = []
    try:
        for n in args.items:
            p = prepare_part(n, args)
            m = memory_part(n, p["name"], p["image_bytes"], args, out)
            rows.append((n, p, m))
            shutil.rmtree(out / "home" / "datasets" / p["name"], ignore_errors=True)  # disk: ~12 KB per item
        report(rows, args)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"wall {time.perf_counter() - t_start:.0f} s", flush=True)


def report(rows: list, args) -> None:
    per = 10_000
    print(f"\n(e) cost as data grows: synthetic world at {args.image_size} px; times per {per // 1000}k items; memory: "
          f"tiny_cnn image_only sweeps of {args.epochs} epoch(s), peak sum of PSS over this run's Ray workers once "
          f"the trials read their images (overall: the whole sweep, with the data owner's ray.put)")
    print("| items | users | prepare s/10k | (generate s/10k) | cache s/10k | images MiB | owner object store MiB "
          "| peak PSS 1 trial MiB | 2 trials MiB | ratio 2/1 | 2nd trial adds MiB | overall peak 1 / 2 trials MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, p, m in rows:
        s = per / n
        print(f"| {n} | {p['users']} | {p['prepare'] * s:.1f} | {p['generate'] * s:.1f} | {p['cache'] * s:.1f} | "
              f"{p['image_bytes'] / MIB:.0f} | {max(m[1]['store'], m[2]['store']) / MIB:.0f} | {m[1]['pss'] / MIB:.0f} | "
              f"{m[2]['pss'] / MIB:.0f} | {m[2]['pss'] / max(m[1]['pss'], 1):.2f} | "
              f"{(m[2]['pss'] - m[1]['pss']) / MIB:.0f} | {m[1]['overall'] / MIB:.0f} / {m[2]['overall'] / MIB:.0f} |")
    if args.floor:
        print("\nthe engine's floor: plain Ray Tune trials (torch, the images zero-copy from the object store, put by a plain actor, "
              "tiny_cnn's layers, one epoch on as many items); what a 2nd concurrent trial adds, and the ratio the "
              "engine would have if its 2nd trial cost only that (its 1-trial peak + the floor's addition)")
        print("| items | floor: 1 trial MiB | 2 trials MiB | 2nd trial adds MiB | engine: 2nd trial adds MiB "
              "| engine ratio 2/1 | ratio at the floor's addition |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n, _, m in rows:
            f1, f2, e1, e2 = m["floor"][1]["pss"], m["floor"][2]["pss"], m[1]["pss"], m[2]["pss"]
            print(f"| {n} | {f1 / MIB:.0f} | {f2 / MIB:.0f} | {(f2 - f1) / MIB:.0f} | {(e2 - e1) / MIB:.0f} | "
                  f"{e2 / max(e1, 1):.2f} | {(e1 + f2 - f1) / max(e1, 1):.2f} |")
    if len(rows) > 1:
        (n0, p0, _), (n1, p1, _) = rows[0], rows[-1]
        print(f"\n{n1 // 1000}k vs {n0 // 1000}k items: prepare per 10k x{(p1['prepare'] / n1) / (p0['prepare'] / n0):.2f}, "
              f"cache per 10k x{(p1['cache'] / n1) / (p0['cache'] / n0):.2f} (1.00 = flat)")
    print("\nper process, MiB (anon: private heap - imports, model, batches; file: shared libraries' share and mapped "
          "files; shmem: its share of object-store pages, i.e. the images):")
    for n, _, m in rows:
        for k in (1, 2):
            print(f"  {n} items, {k} trial(s), training peak: {_breakdown(m[k]['at_peak'])}")
        if args.floor:
            for k in (1, 2):
                print(f"  {n} items, plain Tune floor, {k} trial(s), training peak: {_breakdown(m['floor'][k]['at_peak'])}")
        owner = [f for r, f in m[2]["at_overall"].values() if r == "owner"]
        if owner:
            f = owner[0]
            print(f"  {n} items, overall peak (2 trials): the data owner {f['Pss'] / MIB:.0f} (file {f['Pss_File'] / MIB:.0f}"
                  f": the mapped image cache; shmem {f['Pss_Shmem'] / MIB:.0f}: its object-store copy)")


if __name__ == "__main__":
    sys.exit(main())
