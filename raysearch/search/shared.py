"""The sweep's shared data: one owner, on the driver's node, for every trial's dataset, images,
CF vectors and weights.

Why this shape:

* **Where the dataset is.** A dataset is prepared on the machine that runs ``raysearch tune``
  (the head); worker nodes have an empty ``RAYSEARCH_HOME``.  So the owner actor is pinned to the
  driver's node (``NodeAffinitySchedulingStrategy(soft=False)``) and gets the driver's
  ``RAYSEARCH_HOME``; trials anywhere in the cluster receive ObjectRefs, never paths.
* **Objects that outlive worker nodes.** An object dies with its owner.  The actor ``ray.put``\\ s
  everything, so the objects live in the head's object store and are owned by a process on the
  head: losing any worker node loses no shared data.  If the actor process itself dies it is
  restarted (``max_restarts``) and trials re-request (:func:`get_training_data` retries).
* **CPU that is really reserved.** CF fits and image decoding run in the actor, which reserves
  ``DATA_CPUS`` of the driver node's CPUs when that node offers any (locally ``init_ray`` adds that
  many logical CPUs so trials keep every core while data preparation, which mostly runs while
  the first trials wait for it, has its own).  On a cluster whose head offers no CPUs to Ray
  (the layout in ``cluster/``) it reserves nothing and uses the head's cores, which no trial can.
  Data preparation cannot be a separate CPU-requesting task: trials (actors) keep their CPUs
  while they wait, so on a full node it would never be scheduled (a deadlock, not an error).
* **Each configuration computed once, different ones concurrently.** A threaded actor with one
  lock per key: two trials asking for the same CF config never both train it, and a CF fit for
  one config does not block trials that need another (or only images).
* **The reserved CPU works ahead** (:meth:`SharedData.prefetch`).  Starting the owner returns as
  soon as the dataset is loaded; its imports (torch, cornac) run in the background while Tune
  starts the first trial's process.  When the space's CF parameters are all categorical, the CF
  models it can ask for (a handful) are fitted into the on-disk CF cache one after another,
  the space's base config first, pausing while a trial's request is being computed; a request
  for a model being prefetched waits for that fit (one CF lock per model) instead of
  repeating it.  Before this, CF fits ran on the first request, inside the trial's wait.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
import time
from typing import Any

from raysearch.config import RunConfig, from_dict, to_dict

log = logging.getLogger(__name__)

SHARED_ACTOR_PREFIX = "raysearch-shared-"
NAMESPACE = "raysearch"
DATA_CPUS = 1           # CPUs the data owner reserves on the driver's node (when it has any)
MAX_CONCURRENT_PREP = 4  # distinct configurations prepared at once


def cf_key(run: RunConfig) -> str:
    """What one CF model depends on (not the weighting): the prefetch and request paths share its lock."""
    from raysearch.train.data import config_key
    from raysearch.train.methods import METHODS

    if not METHODS.get(run.train.method).uses_cf:
        return "cf:none"
    return "cf:" + config_key({"dataset": run.dataset, "data_root": run.data_root, "split": to_dict(run.split),
                         "cf": to_dict(run.cf)})


def cf_label(run: RunConfig) -> str:
    """A CF configuration as a person reads it (model, dim, epochs and the model's own knobs)."""
    from raysearch.train.data import config_key
    from raysearch.train.methods import METHODS

    if not METHODS.get(run.train.method).uses_cf:
        return "no CF"
    c = to_dict(run.cf)
    knobs = ", ".join(f"{k} {c[k]}" for k in ("beta", "lr", "batch_size", "trainer") if k in c)
    return f"{run.cf.model} dim {run.cf.dim}, {run.cf.epochs} epochs ({knobs})"


def _fit_cf(run: RunConfig) -> None:
    """The run's CF model into the on-disk cache (a cache hit returns at once)."""
    from raysearch.cf import compute_item_vectors
    from raysearch.data.registry import load_dataset
    from raysearch.data.splits import make_split
    from raysearch.train.data import config_key
    from raysearch.train.methods import METHODS

    if not METHODS.get(run.train.method).uses_cf:
        return
    ds = load_dataset(run.dataset, run.data_root)
    compute_item_vectors(ds, make_split(ds, run.split), run.cf, data_root=run.data_root)


def prefetch_runs(space: Any, limit: int = 8) -> list[dict[str, Any]]:
    """One run per distinct CF model the space can sample, the base config's first (TPE's first trial)
    when the space can sample it (a base value outside the choices is never asked for: not fitted);
    [] unless every searched ``cf.*`` parameter is categorical and there are at most ``limit`` models."""
    import itertools

    cf_params = [p for p in space.params if p.name.startswith("cf.")]
    if any(p.kind != "categorical" for p in cf_params):
        return []
    combos = [dict(zip([p.name for p in cf_params], vals)) for vals in
              itertools.product(*[p.encoded_choices for p in cf_params])]
    runs, seen = [], set()
    for values in combos:
        # leave out values whose `when` on another cf.* parameter does not hold (the sampler would)
        active = {n: v for n, v in values.items()
                  if all(space.param(c).decode(values[c]) in vals for c, vals in space.param(n).when if c in values)}
        run = space.apply(active)
        k = cf_key(run)
        if k not in seen:
            seen.add(k)
            runs.append(run)
        if len(runs) > limit:
            return []
    base = cf_key(space.base)
    runs.sort(key=lambda r: cf_key(r) != base)  # stable: the base config's model first, if sampled
    return [to_dict(r) for r in runs]


def with_images(td: Any, images: Any) -> Any:
    """A shallow copy of a TrainingData with ``images`` swapped (works for frozen dataclasses)."""
    out = copy.copy(td)
    object.__setattr__(out, "images", images)
    return out


class SharedData:
    """Actor body: computes each distinct data/CF configuration once and ``ray.put``\\ s it once."""

    def __init__(self, cpus: float = 1.0) -> None:
        self._threads = max(1, int(cpus) or os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._images: dict[str, Any] = {}
        self._parts: dict[str, Any] = {}
        self._busy = 0                      # requests being computed now (prefetch yields to them)
        self._warm = threading.Thread(target=self._import_heavy, daemon=True)
        self._warm.start()                  # torch/cornac import while the first trial starts
        self.computed: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.compute_s: dict[str, float] = {}
        self.prefetched: dict[str, float] = {}
        self.cf_fits: dict[str, dict[str, Any]] = {}  # per CF configuration: what it cost, who waited

    def _import_heavy(self) -> None:
        import torch

        torch.set_num_threads(self._threads)
        import raysearch.cf.models.vaecf.recommender  # noqa: F401  (cornac + the default CF model's code)
        import raysearch.train.loop  # noqa: F401

    def prefetch(self, runs: list[dict[str, Any]]) -> int:
        """Fit these runs' CF models into the on-disk CF cache in the background (returns at once)."""
        threading.Thread(target=self._prefetch, args=(runs,), daemon=True, name="cf-prefetch").start()
        return len(runs)

    def _prefetch(self, runs: list[dict[str, Any]]) -> None:
        self._warm.join()
        for run_dict in runs:
            while self._busy:  # a trial is waiting on a computation: it gets the CPU first
                time.sleep(0.05)
            run = from_dict(RunConfig, run_dict, where="prefetch config")
            key = cf_key(run)
            t0 = time.perf_counter()
            try:
                with self._lock_for(key):
                    _fit_cf(run)
            except Exception as e:  # a trial asking for this config gets the error itself
                log.warning("CF prefetch of %s failed: %s", key[:120], e)
                continue
            with self._lock:
                self.prefetched[key] = time.perf_counter() - t0
                self.cf_fits.setdefault(key, {"cf": cf_label(run), "seconds": self.prefetched[key],
                                              "how": "prefetched (no trial waiting)"})

    def fit_cf(self, run_dict: dict[str, Any]) -> None:
        """``run``'s CF model into the on-disk cache under this owner's lock for it: a fit of it in
        progress here (a prefetch, a request) is awaited, never repeated."""
        run = from_dict(RunConfig, run_dict, where="CF fit")
        self._warm.join()
        with self._lock_for(cf_key(run)):
            _fit_cf(run)

    def check(self, dataset: str, data_root: str | None) -> dict[str, Any]:
        """Load the dataset where the trials' data will be made: a missing one fails here, once."""
        import ray

        from raysearch.data import load_dataset

        ds = load_dataset(dataset, data_root)
        return {"node_id": ray.get_runtime_context().get_node_id(), "n_items": ds.n_items,
                "home": os.environ.get("RAYSEARCH_HOME")}

    def _lock_for(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def get(self, run_dict: dict[str, Any]) -> list[Any]:
        import numpy as np
        import ray

        from raysearch.train.data import data_keys, prepare_training_data

        run = from_dict(RunConfig, run_dict, where="trial config")
        img_key, key = data_keys(run)
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1
        with self._lock_for(key):
            if key not in self._parts:
                t0 = time.perf_counter()
                with self._lock:
                    self._busy += 1
                try:
                    self._warm.join()
                    with self._lock_for(cf_key(run)):  # a prefetch of this CF model: wait for it, not again
                        td = prepare_training_data(run, data_root=run.data_root)
                finally:
                    with self._lock:
                        self._busy -= 1
                with self._lock_for(img_key):
                    if img_key not in self._images:
                        self._images[img_key] = ray.put(np.ascontiguousarray(td.images))
                self._parts[key] = ray.put(with_images(td, None))
                with self._lock:
                    self.computed[key] = self.computed.get(key, 0) + 1
                    self.compute_s[key] = time.perf_counter() - t0
                    ck = cf_key(run)
                    if ck not in self.cf_fits:  # not prefetched: fitted (with the images) while a trial waited
                        self.cf_fits[ck] = {"cf": cf_label(run), "seconds": self.compute_s[key],
                                            "how": "on request (a trial waited; includes its images and split)"}
        # wrapped in a list: the caller receives the refs themselves, not the values
        return [self._images[img_key], self._parts[key]]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"computed": dict(self.computed), "requests": dict(self.requests),
                    "compute_s": dict(self.compute_s), "n_images_objects": len(self._images),
                    "prefetched_cf_s": dict(self.prefetched), "cf_fits": dict(self.cf_fits)}


def start_shared_actor(name: str, reserve: bool = True, threads: int | None = None) -> Any:
    """Create (or find) the sweep's data owner, pinned to this driver's node.

    ``reserve=False``: an owner started ahead of its sweep (the experiment's next inner search, its
    background CF fits) reserves no CPU, so the running search's trials keep their slots;
    ``threads``: its torch threads (default: the CPUs it reserves, else all of the node's)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), {})
    cpus = DATA_CPUS if reserve and node.get("Resources", {}).get("CPU", 0) >= DATA_CPUS else 0
    env = {k: os.environ[k] for k in ("RAYSEARCH_HOME", "RAYSEARCH_OFFLINE") if k in os.environ}
    return ray.remote(SharedData).options(
        name=name, namespace=NAMESPACE, get_if_exists=True, num_cpus=cpus,
        max_concurrency=MAX_CONCURRENT_PREP, max_restarts=3, max_task_retries=2,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        runtime_env={"env_vars": env} if env else None,
    ).remote(cpus=threads or cpus or (os.cpu_count() or 1))


_WARM = False
#: what :func:`warm_trial_imports` imports (``bench/bench_gc_imports.py`` measures the same list)
WARM_IMPORTS = ("torch._inductor.config", "raysearch.metrics", "raysearch.train.loop")


def warm_trial_imports() -> None:
    """Import what a trial's first epoch would import lazily (torch, the training code,
    ``torch._dynamo``, which the first optimizer and ``torch.use_deterministic_algorithms``
    load via ``torch._inductor.config``): ~3 s in a fresh worker process, now spent while the data
    owner computes, not after, and with the cyclic GC paused (:mod:`raysearch._gc`)."""
    global _WARM
    if _WARM:
        return
    _WARM = True
    import importlib

    from raysearch._gc import gc_paused

    try:
        with gc_paused(freeze=True):  # imports live as long as the process: no full pass need scan them
            for name in WARM_IMPORTS:
                importlib.import_module(name)
    except ImportError as e:  # only a head start: the trial imports what it needs anyway
        log.debug("warm-up import failed: %s", e)


def get_training_data(actor_name: str, run: RunConfig, attempts: int = 3) -> Any:
    """The trial's TrainingData: refs from the owner, images mapped zero-copy (read-only) from plasma.

    A restarted owner has lost its objects (``OwnerDiedError``/``ObjectLostError``): ask again, so a
    crash of the owner process costs a recomputation, not the trial.
    """
    import ray
    from ray.exceptions import ObjectLostError, RayActorError

    for attempt in range(attempts):
        try:
            actor = ray.get_actor(actor_name, namespace=NAMESPACE)
            pending = actor.get.remote(to_dict(run))
            warm_trial_imports()  # while the owner works (the first trial waits for its start-up, CF fits)
            img_ref, parts_ref = ray.get(pending)
            images, parts = ray.get([img_ref, parts_ref])
            return with_images(parts, images)
        except (ObjectLostError, RayActorError) as e:
            if attempt == attempts - 1:
                raise
            log.warning("shared data unavailable (%s); asking the owner again", type(e).__name__)
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")
