"""What the cyclic GC costs while a fresh trial process imports torch's training stack, with and
without ``raysearch._gc.gc_paused`` (issue 21 d), each variant in its own fresh interpreter, in
alternating order:

    python bench/bench_gc_imports.py            # 4 runs per variant and site

Two sites, as raysearch runs them:

* ``worker``: a Ray Train worker (torch and ``ray.train.torch`` already imported) importing
  ``torch._inductor.config`` (what ``torch._dynamo`` and the first optimizer step pull in) and the
  training code: ``warm_trial_imports``;
* ``trial``: the DDP trial process (Ray Tune imported) importing ``ray.train.torch`` and the Tune
  report callback, which import torch: ``_fit_with_torch_trainer``.

Per run: CPU seconds of the imports, of that the seconds inside full (generation 2) collections
(a ``gc.callbacks`` timer), and the full-collection seconds of a burst of allocations right after
(``--burst`` small dicts kept alive, 100k by default: enough allocations for the collector to consider a full pass), where a collection the pause
only deferred would show up.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import gc, json, sys, time
full = [0.0, 0.0, 0.0]  # seconds in full (gen 2) collections, in all collections, start of the current one
def cb(phase, info):
    if phase == "start":
        full[2] = time.perf_counter()
        return
    dt = time.perf_counter() - full[2]
    full[1] += dt
    if info["generation"] == 2:
        full[0] += dt
import contextlib, importlib
site, paused, BURST = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if site == "worker":
    import torch, ray.train.torch  # noqa: F401  (a Train worker has these before the train fn runs)
else:
    import ray.tune  # noqa: F401  (a Tune trial process)
import raysearch.search.shared  # noqa: F401  (imported before the warm-up in both sites)
from raysearch._gc import gc_paused
gc.callbacks.append(cb)
t = time.process_time()
mode = {0: None, 1: dict(), 2: dict(freeze=True)}[paused]
ctx = gc_paused(**mode) if mode is not None else contextlib.nullcontext()
with ctx:
    if site == "worker":  # warm_trial_imports' list
        for name in raysearch.search.shared.WARM_IMPORTS:
            importlib.import_module(name)
    else:  # _fit_with_torch_trainer's
        from ray.train.torch import TorchTrainer  # noqa: F401
        from ray.tune.integration.ray_train import TuneReportCallback  # noqa: F401
imp, imp_full, imp_all = time.process_time() - t, full[0], full[1]
keep = [{"i": i} for i in range(BURST)]
print(json.dumps({"import_cpu_s": imp, "import_full_gc_s": imp_full, "import_gc_s": imp_all,
                  "after_gc_s": full[1] - imp_all}))
"""


VARIANTS = {"on": 0, "paused": 1, "paused+freeze": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4, help="fresh interpreters per variant and site")
    ap.add_argument("--burst", type=int, default=100_000, help="objects allocated (kept) after the imports")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    print(f"{'site':<7} {'GC':<14} {'import CPU s':>13} {'GC in import s':>15} {'of it full s':>13} "
          f"{'GC after s':>11}  (median of {args.runs}; after = {args.burst} objects allocated next)")
    for site in ("worker", "trial"):
        out: dict[str, list[dict[str, float]]] = {k: [] for k in VARIANTS}
        for i in range(args.runs):
            order = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
            for k in order:
                r = subprocess.run([sys.executable, "-c", CHILD, site, str(VARIANTS[k]), str(args.burst)],
                                   capture_output=True, text=True, env=env, timeout=300, check=True)
                out[k].append(json.loads(r.stdout.strip().splitlines()[-1]))
        med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in out.items()}
        for k, m in med.items():
            print(f"{site:<7} {k:<14} {m['import_cpu_s']:>13.2f} {m['import_gc_s']:>15.2f} "
                  f"{m['import_full_gc_s']:>13.2f} {m['after_gc_s']:>11.2f}")
        on = med["on"]["import_cpu_s"] + med["on"]["after_gc_s"]
        for k in ("paused", "paused+freeze"):
            saved = on - med[k]["import_cpu_s"] - med[k]["after_gc_s"]
            print(f"{site:<7} {k}: {saved:+.2f} s CPU saved, import plus the GC after it")
    print(f"(load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
