"""The sweep engine: Ray Tune + OptunaSearch (TPE) + ASHA over ``raysearch.train.fit``.

Design choices (why, not what):

* **One worker per trial** (the default) runs ``fit`` directly inside a Tune *function* trainable and
  reports every epoch with ``ray.tune.report``; actors are reused between trials.  A
  ``TorchTrainer`` costs 20-30 s of fixed start-up here, so it is only built for
  ``--workers-per-trial > 1`` or ``--gpus-per-trial > 0``: then the trial launches a Ray Train V2
  ``TorchTrainer`` (``Tuner(trainer)`` no longer exists in V2) whose per-epoch reports reach Tune
  through ``ray.tune.integration.ray_train.TuneReportCallback``, so ASHA can stop it too.
* **ASHA's time attribute is the reported ``epoch``** (= ``training_iteration`` for every per-epoch
  report) and ``stop_last_trials=False``: each trial sends one extra *final* report (test mAP of
  the best checkpoint + the checkpoint) with the same epoch number, which ASHA must neither count
  as a new rung nor stop.
* **Shared objects through a single named actor** (``SharedData``), computed lazily and cached per
  key.  Precomputing every categorical CF combination up front would train CF models that TPE
  never samples (the product grows fast: model x dim x hidden x beta ...), while a lazy cache
  computes exactly the configs the sweep uses, each once: the actor handles one request at a time,
  so two trials asking for the same CF config never both train it.  The uint8 image array is
  ``ray.put`` once per (dataset, image size) and the per-config arrays (CF targets, weights, labels)
  once per key; trials receive ObjectRefs and map the images zero-copy from the object store, so
  memory does not grow with concurrent trials beyond each trial's model and batches.
* **Resume** restores the Tuner from ``<storage>/<name>`` (searcher and scheduler state included);
  the trainable is wrapped again, which re-creates the actor and re-puts the shared objects.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from raysearch import paths
from raysearch.config import ConfigError, RunConfig, from_dict, to_dict
from raysearch.search.space import SearchSpace, load_space, default_space_path
from raysearch.search.tracking import TrialTracker, WandbSettings, wandb_mode

log = logging.getLogger(__name__)

METRIC = "val_map"
MODE = "max"
TIME_ATTR = "epoch"
SHARED_ACTOR_PREFIX = "raysearch-shared-"
NAMESPACE = "raysearch"


@dataclass(frozen=True)
class SweepConfig:
    """Everything ``raysearch tune`` takes from the command line."""

    dataset: str = "synthetic"
    data_root: str | None = None
    space: str | None = None              # search-space YAML; None: search_spaces/<dataset>.yaml
    method: str | None = None             # None: the space's base method; a name; or "all"
    trials: int = 8
    max_concurrent: int | None = None     # None: as many as the cluster's CPUs/GPUs allow
    scheduler: str = "asha"               # asha | none
    search: str = "optuna"                # optuna (TPE) | random (Optuna RandomSampler; baseline)
    grace_period: int | None = None       # None: from the space file
    reduction_factor: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    storage: str | None = None            # local path or URI (s3://, gs://); default <home>/runs
    name: str | None = None
    resume: bool = False
    address: str | None = None            # None: local Ray; "auto" | "ray://host:10001"
    wandb: bool = True
    wandb_project: str = "raysearch"
    seed: int = 0
    epochs: int | None = None             # override the space's train.epochs
    time_budget_s: float | None = None
    torch_trainer: bool = False           # force the TorchTrainer path even for 1 CPU worker

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {self.trials}")
        if self.scheduler not in ("asha", "none"):
            raise ConfigError(f"--scheduler must be 'asha' or 'none', got {self.scheduler!r}")
        if self.search not in ("optuna", "random"):
            raise ConfigError(f"search must be 'optuna' or 'random', got {self.search!r}")
        if self.workers_per_trial < 1 or self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ConfigError("--workers-per-trial >= 1, --cpus-per-trial > 0 and --gpus-per-trial >= 0 required")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent must be >= 1, got {self.max_concurrent}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")

    @property
    def distributed(self) -> bool:
        return self.workers_per_trial > 1 or self.gpus_per_trial > 0 or self.torch_trainer


@dataclass
class SweepResult:
    run_dir: Path
    results: pd.DataFrame
    best_yaml: Path | None
    shared_stats: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    interrupted: bool = False             # fewer trials than the budget (Ctrl+C, time budget): --resume


# ------------------------------------------------------------------------------ shared data

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


def _with_images(td: Any, images: Any) -> Any:
    """A shallow copy of a TrainingData with ``images`` swapped (works for frozen dataclasses)."""
    out = copy.copy(td)
    object.__setattr__(out, "images", images)
    return out


class SharedData:
    """Named actor: computes each distinct data/CF configuration once and ``ray.put``s it once.

    Requests are served one at a time (the default for a sync actor), which is what makes
    "computed once" hold under concurrent trials.  Objects it puts are owned by it, so they live
    exactly as long as the sweep's actor.
    """

    def __init__(self) -> None:
        self._images: dict[str, Any] = {}
        self._parts: dict[str, Any] = {}
        self.computed: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.compute_s: dict[str, float] = {}

    def get(self, run_dict: dict[str, Any]) -> list[Any]:
        import ray

        from raysearch.train import prepare_training_data

        run = from_dict(RunConfig, run_dict, where="trial config")
        img_key, key = data_keys(run)
        self.requests[key] = self.requests.get(key, 0) + 1
        if key not in self._parts:
            t0 = time.perf_counter()
            td = prepare_training_data(run, data_root=run.data_root)
            if img_key not in self._images:
                import numpy as np

                self._images[img_key] = ray.put(np.ascontiguousarray(td.images))
            self._parts[key] = ray.put(_with_images(td, None))
            self.computed[key] = self.computed.get(key, 0) + 1
            self.compute_s[key] = time.perf_counter() - t0
        # wrapped in a list: the caller receives the refs themselves, not the values
        return [self._images[img_key], self._parts[key]]

    def stats(self) -> dict[str, Any]:
        return {"computed": dict(self.computed), "requests": dict(self.requests),
                "compute_s": dict(self.compute_s), "n_images_objects": len(self._images)}


def get_training_data(actor: Any, run: RunConfig) -> Any:
    """The trial's TrainingData: refs from the actor, images mapped zero-copy (read-only) from plasma."""
    import ray

    img_ref, parts_ref = ray.get(actor.get.remote(to_dict(run)))
    images, parts = ray.get([img_ref, parts_ref])
    return _with_images(parts, images)


# ------------------------------------------------------------------------------ trainables

@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its sampled parameters (passed once via ``tune.with_parameters``)."""

    space: SearchSpace
    base: RunConfig
    shared_actor: str
    wandb: WandbSettings
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    storage: str = ""
    torch_trainer: bool = False


def _clean_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """Tune metrics must be plain scalars (no tensors, no lists)."""
    out = {}
    for k, v in m.items():
        if isinstance(v, bool) or isinstance(v, (int, float, str)):
            out[k] = v
        elif hasattr(v, "item"):
            try:
                out[k] = v.item()
            except (ValueError, RuntimeError):
                pass
    return out


def _save_state(state: Any, run: RunConfig, result: Any, out_dir: str) -> None:
    import torch

    torch.save(state, os.path.join(out_dir, "model.pt"))
    from raysearch.config import dump_run_config

    dump_run_config(run, os.path.join(out_dir, "config.yaml"))
    Path(out_dir, "result.json").write_text(json.dumps(_final_metrics(result), default=str))


def _final_metrics(res: Any) -> dict[str, Any]:
    return {
        "final": 1, "best_val_map": float(res.best_val_map), "val_map": float(res.best_val_map),
        "test_map": float(res.test_map) if res.test_map is not None else float("nan"),
        "epochs_run": int(res.epochs_run), "stop_reason": str(res.stop_reason),
        "fit_wall_time_s": float(res.wall_time_s), "train_time_s": float(res.train_time_s),
        TIME_ATTR: int(res.epochs_run),
    }


def trial_fn(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function trainable: one sampled config -> one ``fit`` (directly or via TorchTrainer)."""
    import ray
    from ray import tune

    t_start = time.perf_counter()
    run = ctx.space.apply(config, ctx.base)
    tc = tune.get_context()
    use_trainer = ctx.workers_per_trial > 1 or ctx.gpus_per_trial > 0 or ctx.torch_trainer
    # with a TorchTrainer the rank-0 worker owns the W&B run (it sees every epoch first-hand)
    wb = dataclasses.replace(ctx.wandb, enabled=False) if use_trainer else ctx.wandb
    tracker = TrialTracker(wb, run, tc.get_trial_name(), tc.get_trial_id(), params=config)
    reason = "error"
    summary: dict[str, Any] = {}
    try:
        if use_trainer:
            summary = _fit_with_torch_trainer(run, ctx, config, tc.get_trial_name(), tc.get_trial_id())
        else:
            summary = _fit_in_trial(run, ctx, tracker, ray)
        reason = summary.get("stop_reason", "completed")
    except SystemExit:  # Tune stops a trial (ASHA) by exiting the training thread at a report
        reason = "asha_stopped"
        raise
    finally:
        summary["trial_wall_time_s"] = time.perf_counter() - t_start
        tracker.finish(summary, reason)


def _epoch_reporter(tracker: TrialTracker, report: Callable[[dict[str, Any]], None], **extra: Any
                    ) -> Callable[[dict[str, Any]], None]:
    """``fit``'s per-epoch callback for both trial paths: log to W&B, then report to Tune/Train.

    Untracked epochs (sequential's aux-only stage) are logged but not reported: an untrained
    classifier's val mAP must not feed ASHA (and every DDP rank skips the same epochs, so Train
    V2's report barrier stays consistent).  ``train_time_s`` is cumulative: it is what
    results.parquet keeps for trials ASHA stops mid-way.
    """
    spent = [0.0]

    def callback(metrics: dict[str, Any]) -> None:
        m = _clean_metrics(metrics)
        tracker.log_epoch(m)
        spent[0] += float(m.get("epoch_time_s", 0.0))
        if metrics.get("tracked", True):
            report({**m, TIME_ATTR: int(metrics["epoch"]), "train_time_s": spent[0], **extra})

    return callback


def _fit_in_trial(run: RunConfig, ctx: TrialContext, tracker: TrialTracker, ray: Any) -> dict[str, Any]:
    import torch
    from ray import tune

    from raysearch.train import fit

    torch.set_num_threads(max(1, int(ctx.cpus_per_trial)))
    actor = ray.get_actor(ctx.shared_actor, namespace=NAMESPACE)
    t0 = time.perf_counter()
    data = get_training_data(actor, run)
    data_s = time.perf_counter() - t0

    callback = _epoch_reporter(tracker, tune.report, data_s=data_s)
    with tempfile.TemporaryDirectory(prefix="raysearch-ckpt-") as tmp:
        res = fit(run, data, callback=callback)
        final = {**_final_metrics(res), "data_s": data_s}
        ckpt_dir = os.path.join(tmp, "best")
        os.makedirs(ckpt_dir, exist_ok=True)
        _save_state(res.best_state, run, res, ckpt_dir)
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))
    return final


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: DDP ``fit`` on the shared data; rank 0's epochs reach Tune via the callback."""
    import ray
    import ray.train
    import torch

    from raysearch.train import fit

    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    run = from_dict(RunConfig, config["run"], where="trial config")
    actor = ray.get_actor(config["shared_actor"], namespace=NAMESPACE)
    data = get_training_data(actor, run)
    rank = ray.train.get_context().get_world_rank()
    wb: WandbSettings = config["wandb"]
    tracker = TrialTracker(wb if rank == 0 else dataclasses.replace(wb, enabled=False), run,
                           config["trial_name"], config["trial_id"], params=config["params"])
    callback = _epoch_reporter(tracker, ray.train.report)

    # every rank must call ray.train.report (a barrier in Train V2), so every rank gets the callback
    try:
        res = fit(run, data, callback=callback, distributed=True, callback_all_ranks=True)
    except BaseException:
        tracker.finish({}, "error")
        raise
    final = _final_metrics(res)
    tracker.finish(final, final["stop_reason"])
    with tempfile.TemporaryDirectory(prefix="raysearch-ckpt-") as tmp:
        ckpt = None
        if rank == 0:
            _save_state(res.best_state, run, res, tmp)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(final, checkpoint=ckpt)


def _fit_with_torch_trainer(run: RunConfig, ctx: TrialContext, params: dict[str, Any], trial_name: str,
                            trial_id: str) -> dict[str, Any]:
    from ray.train import RunConfig as TrainRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    w = ctx.workers_per_trial
    cpus = worker_cpus(ctx.cpus_per_trial, w)
    res_per_worker: dict[str, float] = {"CPU": cpus}
    if ctx.gpus_per_trial > 0:
        res_per_worker["GPU"] = ctx.gpus_per_trial / w

    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"run": to_dict(run), "shared_actor": ctx.shared_actor, "cpus_per_worker": cpus,
                           "wandb": ctx.wandb, "trial_name": trial_name, "trial_id": trial_id, "params": params},
        scaling_config=ScalingConfig(num_workers=w, use_gpu=ctx.gpus_per_trial > 0, resources_per_worker=res_per_worker),
        run_config=TrainRunConfig(name=f"train-{trial_id}", storage_path=ctx.storage, callbacks=[TuneReportCallback()]),
    )
    result = trainer.fit()
    return dict(result.metrics or {})


# ------------------------------------------------------------------------------ the sweep

def _storage_and_dir(cfg: SweepConfig, name: str) -> tuple[str, Path]:
    """Ray storage path (local absolute path or URI) and the local run directory for our outputs."""
    storage = cfg.storage or str(paths.runs_dir(cfg.data_root))
    if "://" in storage:
        return storage, paths.runs_dir(cfg.data_root) / name
    storage = str(Path(storage).expanduser().resolve())
    return storage, Path(storage) / name


def init_ray(address: str | None) -> None:
    """Join ``address`` or start a local instance sized to this machine."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)


DRIVER_CPU = 0.01  # a TorchTrainer trial only waits on trainer.fit(); Tune refuses empty requests


def worker_cpus(cpus_per_trial: float, workers: int) -> float:
    """``--cpus-per-trial`` is the trial's total: split over the workers, minus the driver's sliver,
    so a trial never asks Ray for more CPUs than exist (which would hang, not fail)."""
    return (cpus_per_trial - DRIVER_CPU) / workers


def _resources(cfg: SweepConfig) -> dict[str, float]:
    if cfg.distributed:
        # the trial itself only drives the TorchTrainer; its workers reserve the CPUs/GPUs
        return {"cpu": DRIVER_CPU}
    return {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}


def check_resources(cfg: SweepConfig) -> None:
    """Ray queues a request larger than the cluster forever (a hang, not an error): refuse it.

    On a joined cluster (``--address``) an autoscaler may still add nodes, so only warn there.
    """
    import ray

    res = ray.cluster_resources()
    problems = []
    if cfg.cpus_per_trial > res.get("CPU", 0):
        problems.append(f"--cpus-per-trial {cfg.cpus_per_trial:g} > {res.get('CPU', 0):g} CPUs in the cluster")
    if cfg.gpus_per_trial > res.get("GPU", 0):
        problems.append(f"--gpus-per-trial {cfg.gpus_per_trial:g} > {res.get('GPU', 0):g} GPUs in the cluster")
    if not problems:
        return
    msg = "; ".join(problems) + ": no trial could ever be scheduled"
    if cfg.address is None:
        raise ConfigError(msg)
    log.warning("%s (unless the autoscaler adds nodes)", msg)


def _max_concurrent(cfg: SweepConfig) -> int:
    import ray

    if cfg.max_concurrent:
        return cfg.max_concurrent
    res = ray.cluster_resources()
    cpu_need = cfg.cpus_per_trial
    n = int(res.get("CPU", 1) // cpu_need)
    if cfg.gpus_per_trial > 0:
        n = min(n, int(res.get("GPU", 0) // cfg.gpus_per_trial))
    return max(1, min(n, cfg.trials))


def original_sweep_config(cfg: SweepConfig) -> SweepConfig:
    """The settings a sweep was started with (``sweep.json``), for ``--resume``.

    The restored Tuner keeps its searcher and scheduler; the trials' space, epochs, method and
    resources must match them, so only ``--address`` (where to run now) comes from the new command.
    """
    if not cfg.name:
        raise ConfigError("--resume needs the --name of the sweep to continue")
    _, run_dir = _storage_and_dir(cfg, cfg.name)
    p = run_dir / "sweep.json"
    if not p.is_file():
        raise ConfigError(f"--resume: no restorable sweep at {run_dir} (no sweep.json; was it started with this --storage/--name?)")
    orig = json.loads(p.read_text())["sweep"]
    orig.update(resume=True, address=cfg.address)
    try:
        return SweepConfig(**orig)
    except TypeError as e:
        raise ConfigError(f"{p}: not a sweep.json written by this version: {e}") from None


def build_space(cfg: SweepConfig) -> SearchSpace:
    space = load_space(cfg.space or default_space_path(cfg.dataset))
    space = space.with_base(dataset=cfg.dataset, data_root=cfg.data_root)
    if cfg.epochs:
        space = dataclasses.replace(space, base=dataclasses.replace(
            space.base, train=dataclasses.replace(space.base.train, epochs=cfg.epochs)))
    if cfg.method:
        space = space.with_method(cfg.method)
    return space


def run_sweep(cfg: SweepConfig, space: SearchSpace | None = None, callbacks: Sequence[Any] = (),
              verbose: int = 0) -> SweepResult:
    """Run (or ``--resume``) a sweep and write ``results.parquet`` / ``best.yaml`` in the run directory."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from raysearch.report import write_results

    t0 = time.perf_counter()
    if cfg.resume:
        cfg = original_sweep_config(cfg)
    space = space or build_space(cfg)
    if cfg.address is None and not cfg.resume:
        # local run: a missing/corrupt dataset is one clear error here, not N failed trials
        from raysearch.data import load_dataset

        load_dataset(space.base.dataset, cfg.data_root)
    name = cfg.name or f"{Path(cfg.dataset).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage, run_dir = _storage_and_dir(cfg, name)
    exp_path = f"{storage.rstrip('/')}/{name}"
    init_ray(cfg.address)
    check_resources(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_meta(run_dir, cfg, space, name)

    actor_name = f"{SHARED_ACTOR_PREFIX}{name}"
    actor = ray.remote(num_cpus=0)(SharedData).options(name=actor_name, namespace=NAMESPACE,
                                                        get_if_exists=True).remote()
    mode = wandb_mode() if cfg.wandb else "disabled"
    ctx = TrialContext(
        space=space, base=space.base, shared_actor=actor_name,
        wandb=WandbSettings(enabled=cfg.wandb, project=cfg.wandb_project, group=name, dir=str(run_dir), mode=mode),
        cpus_per_trial=cfg.cpus_per_trial, gpus_per_trial=cfg.gpus_per_trial,
        workers_per_trial=cfg.workers_per_trial, storage=storage, torch_trainer=cfg.torch_trainer,
    )
    trainable = tune.with_resources(tune.with_parameters(trial_fn, ctx=ctx), _resources(cfg))

    if cfg.resume:
        if not tune.Tuner.can_restore(exp_path):
            raise ConfigError(f"--resume: no restorable sweep at {exp_path}")
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True)
    else:
        if tune.Tuner.can_restore(exp_path):
            raise ConfigError(f"a sweep named {name!r} already exists at {exp_path}; use --resume or another --name")
        epochs = space.base.train.epochs
        if cfg.search == "optuna":
            sampler = optuna.samplers.TPESampler(multivariate=True, seed=cfg.seed,
                                                 n_startup_trials=max(3, min(10, cfg.trials // 3)))
        else:
            sampler = optuna.samplers.RandomSampler(seed=cfg.seed)
        search = OptunaSearch(space.define_by_run(), metric=METRIC, mode=MODE, sampler=sampler)
        if cfg.scheduler == "asha":
            scheduler = ASHAScheduler(
                time_attr=TIME_ATTR, max_t=epochs,
                grace_period=min(cfg.grace_period or space.grace_period, epochs),
                reduction_factor=cfg.reduction_factor or space.reduction_factor,
                stop_last_trials=False,
            )
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=MODE, search_alg=search, scheduler=scheduler,
                num_samples=cfg.trials, max_concurrent_trials=_max_concurrent(cfg),
                reuse_actors=not cfg.distributed, time_budget_s=cfg.time_budget_s,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, callbacks=list(callbacks), verbose=verbose,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    grid = tuner.fit()
    stats = ray.get(actor.stats.remote())
    ray.kill(actor)
    df = results_frame(grid, space, cfg.scheduler)
    _, best = write_results(df, run_dir)
    (run_dir / "shared_objects.json").write_text(json.dumps(stats, indent=2))
    n_target = json.loads((run_dir / "sweep.json").read_text())["sweep"]["trials"] if cfg.resume else cfg.trials
    return SweepResult(run_dir=run_dir, results=df, best_yaml=best, shared_stats=stats,
                       wall_time_s=time.perf_counter() - t0, interrupted=len(df) < n_target)


def _write_meta(run_dir: Path, cfg: SweepConfig, space: SearchSpace, name: str) -> None:
    meta = {"name": name, "sweep": dataclasses.asdict(cfg), "space_file": space.path,
            "params": space.names, "wandb_project": cfg.wandb_project}
    p = run_dir / "sweep.json"
    if cfg.resume and p.is_file():  # the restored Tuner keeps the original settings: so does sweep.json
        meta = json.loads(p.read_text())
        meta["resumed"] = meta.get("resumed", 0) + 1
    p.write_text(json.dumps(meta, indent=2, default=str))


def _last_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]


def results_frame(grid: Any, space: SearchSpace, scheduler: str = "asha") -> pd.DataFrame:
    """One row per trial from Tune's ResultGrid (parameters, mAPs, epochs, stop reason, times)."""
    rows = []
    for r in grid:
        m = dict(r.metrics or {})
        params = {k: v for k, v in (r.config or {}).items() if k in space.names}
        try:
            run = space.apply(params, space.base)
        except ConfigError:
            run = space.base
        final = bool(m.get("final"))
        if r.error is not None:
            reason = "error"
        elif final:
            reason = str(m.get("stop_reason", "completed"))
        else:
            # no final report: the scheduler stopped it, or the sweep was cut (time budget, Ctrl+C)
            reason = ("asha_stopped" if scheduler == "asha" else "stopped") if m else "error"
        best_val = m.get("best_val_map")
        epochs_run = int(m["epochs_run"]) if final else int(m.get(TIME_ATTR, 0) or 0)
        found = re.search(r"_([0-9a-f]{5,})_\d+_", Path(r.path).name) if r.path else None
        trial_id = found.group(1) if found else str(r.path)
        row = {
            "trial_id": m.get("trial_id", trial_id),
            "method": run.train.method, "weighting": run.train.weighting,
            **{k: (json.dumps(list(v)) if isinstance(v, (list, tuple)) else v)
               for k, v in ((n, space.param(n).decode(params[n])) for n in space.names if n in params)},
            "best_val_map": float(best_val) if best_val is not None and epochs_run > 0 else float("nan"),
            "test_map": float(m["test_map"]) if final and m.get("test_map") is not None else float("nan"),
            "epochs_run": epochs_run, "stop_reason": reason,
            "wall_time_s": float(m.get("time_total_s", float("nan"))),
            "train_time_s": float(m.get("train_time_s", float("nan"))),
            "data_s": float(m.get("data_s", float("nan"))),
            "checkpoint": r.checkpoint.path if r.checkpoint else m.get("checkpoint_path"),  # TorchTrainer path
            "error": None if r.error is None else _last_line(r.error),
            "config": json.dumps(to_dict(run)),
        }
        rows.append(row)
    df = pd.DataFrame(rows)
    for n in space.names:  # conditional parameters are absent in some trials
        if n not in df:
            df[n] = None
    return df
