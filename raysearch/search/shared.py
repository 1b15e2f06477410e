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
"""
from __future__ import annotations

import copy
import json
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


def _key(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def data_keys(run: RunConfig) -> tuple[str, str]:
    """(images key, per-config key).  ``image_only`` needs no CF, so all its trials share one key."""
    from raysearch.train import aux_weighting

    img = {"dataset": run.dataset, "data_root": run.data_root, "image_size": run.train.image_size}
    scheme = aux_weighting(run)
    needs_cf = scheme is not None
    parts = {**img, "split": to_dict(run.split),
             "cf": to_dict(run.cf) if needs_cf else None,
             "weighting": scheme,
             "cf_standardize": run.train.cf_standardize if needs_cf else None}
    return _key(img), _key(parts)


def with_images(td: Any, images: Any) -> Any:
    """A shallow copy of a TrainingData with ``images`` swapped (works for frozen dataclasses)."""
    out = copy.copy(td)
    object.__setattr__(out, "images", images)
    return out


class SharedData:
    """Actor body: computes each distinct data/CF configuration once and ``ray.put``\\ s it once."""

    def __init__(self, cpus: float = 1.0) -> None:
        import torch

        torch.set_num_threads(max(1, int(cpus) or os.cpu_count() or 1))
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._images: dict[str, Any] = {}
        self._parts: dict[str, Any] = {}
        self.computed: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.compute_s: dict[str, float] = {}

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

        from raysearch.train import prepare_training_data

        run = from_dict(RunConfig, run_dict, where="trial config")
        img_key, key = data_keys(run)
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1
        with self._lock_for(key):
            if key not in self._parts:
                t0 = time.perf_counter()
                td = prepare_training_data(run, data_root=run.data_root)
                with self._lock_for(img_key):
                    if img_key not in self._images:
                        self._images[img_key] = ray.put(np.ascontiguousarray(td.images))
                self._parts[key] = ray.put(with_images(td, None))
                with self._lock:
                    self.computed[key] = self.computed.get(key, 0) + 1
                    self.compute_s[key] = time.perf_counter() - t0
        # wrapped in a list: the caller receives the refs themselves, not the values
        return [self._images[img_key], self._parts[key]]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"computed": dict(self.computed), "requests": dict(self.requests),
                    "compute_s": dict(self.compute_s), "n_images_objects": len(self._images)}


def start_shared_actor(name: str) -> Any:
    """Create (or find) the sweep's data owner, pinned to this driver's node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), {})
    cpus = DATA_CPUS if node.get("Resources", {}).get("CPU", 0) >= DATA_CPUS else 0
    env = {k: os.environ[k] for k in ("RAYSEARCH_HOME", "RAYSEARCH_OFFLINE") if k in os.environ}
    return ray.remote(SharedData).options(
        name=name, namespace=NAMESPACE, get_if_exists=True, num_cpus=cpus,
        max_concurrency=MAX_CONCURRENT_PREP, max_restarts=3, max_task_retries=2,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        runtime_env={"env_vars": env} if env else None,
    ).remote(cpus=cpus or (os.cpu_count() or 1))


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
            img_ref, parts_ref = ray.get(actor.get.remote(to_dict(run)))
            images, parts = ray.get([img_ref, parts_ref])
            return with_images(parts, images)
        except (ObjectLostError, RayActorError) as e:
            if attempt == attempts - 1:
                raise
            log.warning("shared data unavailable (%s); asking the owner again", type(e).__name__)
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")
