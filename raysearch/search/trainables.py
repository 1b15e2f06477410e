"""What one sweep trial runs: ``raysearch.train.fit`` inside a Tune function trainable, or, for
DDP / GPU trials, inside a Ray Train V2 ``TorchTrainer`` that the trial builds.

Why:

* **Per-epoch checkpoints** (``fit(epoch_state=True)``: model, optimizer, LR schedule, early
  stopping state, RNG streams) go through Tune's checkpoint API every ``checkpoint_every``
  epochs, so a trial whose node is lost is restarted elsewhere by ``FailureConfig`` and resumes
  after its last checkpointed epoch, not from epoch 0.  The final report carries the model
  directory (:func:`raysearch.model.io.save_model`) as the last checkpoint.
* **ASHA never cuts a finished trial.** When ``epochs`` is a rung (``grace * rf^k``), the last
  per-epoch report would reach the rung and could be stopped before its final report; so ASHA's
  time attribute (``asha_epoch``) is left out of the last planned epoch's report, and the final
  report (best val mAP, test mAP, model) is the one ASHA judges at ``max_t``.
* **DDP batches**: ``train.batch_size`` is the global batch; each of W workers takes
  ``batch_size / W`` (``fit`` does the split), so a DDP trial and ``raysearch train --workers W``
  optimise the same objective as one process would.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from raysearch.config import RunConfig, SweepConfig, from_dict, to_dict
from raysearch.search.shared import get_training_data

METRIC = "val_map"
#: ASHA's time attribute: the epoch, left out of the last planned epoch's report (see module doc)
ASHA_ATTR = "asha_epoch"
STATE_FILE = "train_state.pt"
#: the test items' scores beside a trial's final model (``raysearch experiment`` pools them out of fold)
SCORES_FILE = "test_scores.npz"


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its sampled parameters (passed once via ``tune.with_parameters``).

    ``settings`` is the command's :class:`~raysearch.config.SweepConfig` itself (an experiment builds
    one with :func:`trial_settings`): a trial reads its resources and checkpoint cadence from it
    (``ctx.cpus_per_trial``, ``ctx.checkpoint_every``, ``ctx.train_poll_s``...), so a new sweep option
    is one field, never a copy here."""

    space: Any
    base: RunConfig
    shared_actor: str
    storage: str = ""
    max_t: int = 0                # ASHA's max_t (0: no rung at the last epoch to avoid)
    save_weights: bool = True     # the final checkpoint holds the model (an experiment unit keeps only its scores)
    settings: SweepConfig = field(default_factory=SweepConfig)

    def __getattr__(self, name: str) -> Any:  # only for names not found on the context itself
        if name in TRIAL_FIELDS:
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def distributed(self) -> bool:
        return self.settings.distributed


#: the SweepConfig fields a trial reads (through ``ctx.<name>``)
TRIAL_FIELDS = frozenset({"cpus_per_trial", "gpus_per_trial", "workers_per_trial", "torch_trainer", "max_failures",
                          "checkpoint_every", "checkpoint_overhead", "checkpoint_mtbf", "train_poll_s"})
assert TRIAL_FIELDS <= {f.name for f in fields(SweepConfig)}


def trial_settings(cfg: Any) -> SweepConfig:
    """The trial settings of ``cfg`` (e.g. an ``ExperimentConfig``): the :data:`TRIAL_FIELDS` it has, by
    name; the others keep SweepConfig's defaults."""
    return SweepConfig(**{k: getattr(cfg, k) for k in TRIAL_FIELDS if hasattr(cfg, k)})


def with_threads(run: RunConfig, cpus: float) -> RunConfig:
    """``run`` training with the torch threads of a process that reserves ``cpus`` CPUs, whatever
    the config said before (a best.yaml of another sweep carries that sweep's count).  The count is
    recorded in the config (results.parquet, best.yaml, W&B) because CPU float reductions depend on
    it: ``raysearch train --config best.yaml`` then retrains the trial exactly."""
    return dataclasses.replace(run, train=dataclasses.replace(run.train, threads=max(1, int(cpus))))


def with_trial_threads(base: RunConfig, settings: SweepConfig) -> RunConfig:
    """:func:`with_threads` for the trials of ``settings``: each training process's CPUs (a DDP
    worker's share of the trial's)."""
    from raysearch.search.cluster import worker_cpus

    return with_threads(base, worker_cpus(settings.cpus_per_trial, settings.workers_per_trial)
                        if settings.distributed else settings.cpus_per_trial)


def clean_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """Tune metrics must be plain scalars (no tensors, no lists, no state thunks)."""
    out = {}
    for k, v in m.items():
        if k.startswith("_"):
            continue
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif hasattr(v, "item"):
            try:
                out[k] = v.item()
            except (ValueError, RuntimeError):
                pass
    return out


def final_metrics(res: Any) -> dict[str, Any]:
    """A trial's final report: ``TrainResult.outcome()`` plus what Tune and ASHA key on."""
    from raysearch.search.results import TIME_ATTR

    out = res.outcome()
    # the best epoch's val AUC, as METRIC is its val mAP: what ASHA judges a final report on under
    # --rung-metric val_auc (the history survives a restart in the trial's checkpoint; NaN if that
    # epoch or its val AUC is missing, e.g. a checkpoint written before val AUC was reported)
    auc = next((h.get("val_auc", float("nan")) for h in res.history if h.get("epoch") == res.best_epoch), float("nan"))
    return {"final": 1, **out, METRIC: out["best_val_map"], "val_auc": auc, "fit_wall_time_s": out["wall_time_s"],
            TIME_ATTR: out["epochs_run"], ASHA_ATTR: out["epochs_run"]}


def weight_report(run: RunConfig, data: Any) -> dict[str, float]:
    """The trial's CF weights as ``weights_*`` metrics (fallback share, range): what the experiment
    report shows per fold, so a scheme that mostly fell back to 1.0 is visible."""
    from raysearch.cf.weights import weight_stats
    from raysearch.train.data import aux_weighting

    scheme = aux_weighting(run)
    if scheme is None:
        return {}
    return {f"weights_{k}": v for k, v in weight_stats(scheme, data.split, data.has_cf, data.weights, data.labels).items()}


def _save_model(res: Any, run: RunConfig, data: Any, out_dir: str, final: dict[str, Any],
                weights: bool = True) -> None:
    """The model directory; its result.json is the trial's final report, so a trial whose node is
    lost right after it (before Tune marked it done) is restored as finished, not re-run.
    ``test_scores.npz`` (test items, their scores) rides along; ``weights=False`` (experiment
    units, hundreds of them) keeps the report and the scores without ``model.pt``."""
    import numpy as np

    from raysearch._io import atomic_path, write_json
    from raysearch.model.io import save_model

    if weights:
        save_model(out_dir, res.best_state, run, data, final, val_scores=res.val_scores)
    else:
        write_json(Path(out_dir, "result.json"), final)
    if res.test_scores is not None:
        with atomic_path(Path(out_dir, SCORES_FILE)) as tmp, open(tmp, "wb") as f:
            np.savez(f, items=np.asarray(data.split.test, dtype=np.int64),
                     scores=np.asarray(res.test_scores, dtype=np.float32))


def finished_report(checkpoint: Any) -> dict[str, Any] | None:
    """The final report kept in a trial's last checkpoint, if that checkpoint is its final model."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        p = Path(d, "result.json")
        if Path(d, STATE_FILE).is_file() or not p.is_file():
            return None
        try:
            final = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
    return final if isinstance(final, dict) and final.get("final") else None


def load_resume_state(checkpoint: Any) -> dict[str, Any] | None:
    """The training state inside a per-epoch checkpoint (``weights_only``: tensors and plain values)."""
    if checkpoint is None:
        return None
    import torch

    with checkpoint.as_directory() as d:
        p = Path(d, STATE_FILE)
        if not p.is_file():
            return None
        return torch.load(p, map_location="cpu", weights_only=True)


class EpochReporter:
    """``fit``'s per-epoch callback for both trial paths: report to Tune/Train, with a
    fault-tolerance checkpoint every ``every`` epochs, held back while the training since the last
    checkpoint is under :meth:`spacing_s`: ``cost / overhead`` (the default budget: at most ~5% of
    training time goes to checkpoints) and at least Young's optimal interval ``sqrt(2 * cost * mtbf)``.
    The second bound is what a checkpoint is for: it saves the work a failure would lose, so below
    that interval saving costs more time than the failures it insures against (with a 10 ms save and
    a node failing every 10 min, one save per ~3.5 s of training; epochs of 30 s still save every
    epoch).  Each save also forces a Tune experiment snapshot (``num_to_keep=1``), part of its cost.

    The cost measured last in this process carries over to the next trial it runs (Tune reuses
    trial actors): otherwise every trial's first due epoch saves at once, which with one-second
    trials is most of their checkpoints (each also forces a Tune experiment snapshot).

    Untracked epochs (sequential's aux-only stage) are not reported: an untrained classifier's val
    mAP must not feed ASHA (and every DDP rank skips the same epochs, so Train V2's report barrier
    stays consistent).  ``train_time_s`` is cumulative: what results.parquet keeps for trials ASHA
    stops mid-way.
    """

    #: the last checkpoint cost measured in this process (seconds), the next trial's starting point
    process_cost: float = 0.0

    def __init__(self, report: Callable[..., None], make_checkpoint: Callable[[str], Any], *, every: int,
                 max_t: int, write_state: bool, extra: dict[str, Any], overhead: float = 0.0,
                 mtbf: float = 0.0) -> None:
        self.report, self.make_checkpoint = report, make_checkpoint
        self.every, self.max_t, self.write_state, self.extra = every, max_t, write_state, extra
        self.spent = float(extra.pop("train_time_s", 0.0))
        self.eval_spent = float(extra.pop("eval_time_s", 0.0))  # per-epoch validation: work, not orchestration
        # cadence by cost: a due checkpoint waits until the training since the last one is >=
        # spacing_s() (short epochs: every few seconds of training; real ones: every epoch, as before)
        # (the cost: state save + a report with checkpoint, minus what a plain report takes)
        self.overhead, self.last_cost, self.since, self.plain_s = overhead, EpochReporter.process_cost, 0.0, 0.0
        self.mtbf = mtbf

    def spacing_s(self) -> float:
        """Training seconds a due checkpoint waits for since the last one (0 with ``overhead=0``:
        every due epoch saves; a cost not measured yet in this process: the next due epoch saves)."""
        if not self.overhead:
            return 0.0
        return max(self.last_cost / self.overhead, math.sqrt(2.0 * self.last_cost * self.mtbf))

    def totals(self) -> dict[str, float]:
        """The trial's cumulative training and validation seconds (restarts included)."""
        return {"train_time_s": self.spent, "eval_time_s": self.eval_spent}

    def __call__(self, metrics: dict[str, Any]) -> None:
        import torch

        from raysearch.search.results import TIME_ATTR

        m = clean_metrics(metrics)
        self.spent += float(m.get("epoch_time_s", 0.0))
        self.since += float(m.get("epoch_time_s", 0.0))
        self.eval_spent += float(m.get("val_time_s", 0.0))
        if not metrics.get("tracked", True):
            return
        epoch = int(metrics["epoch"])
        # reported_at (wall clock): when each epoch reached Tune, for time-to-first-result figures
        out = {**m, TIME_ATTR: epoch, **self.totals(), "reported_at": round(time.time(), 3), **self.extra}
        if not (self.max_t and epoch >= self.max_t):  # the final report is the one ASHA judges at max_t
            out[ASHA_ATTR] = epoch
        state_fn = metrics.get("_state")
        # the schedule's last epoch needs no resume state: the trial's final report (with its model)
        # follows at once, and a restart after it is finished (finished_report)
        due = self.every and state_fn is not None and epoch % self.every == 0 and not metrics.get("_last")
        if not due or self.since < self.spacing_s():
            t0 = time.perf_counter()
            self.report(out)
            self.plain_s = time.perf_counter() - t0
            return
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="raysearch-state-") as tmp:
            ckpt = None
            if self.write_state:
                from raysearch._io import torch_save  # a full disk names the file, never "unexpected pos"

                torch_save(state_fn(), os.path.join(tmp, STATE_FILE))
                ckpt = self.make_checkpoint(tmp)
            self.report(out, checkpoint=ckpt)
        self.last_cost, self.since = max(0.0, time.perf_counter() - t0 - self.plain_s), 0.0
        EpochReporter.process_cost = self.last_cost


def resumed_totals(resume: dict[str, Any] | None) -> dict[str, Any]:
    """Where a restarted trial's epochs and cumulative times continue from (zeros for a fresh one)."""
    if resume is None:
        return {"resumed_from_epoch": 0, "train_time_s": 0.0, "eval_time_s": 0.0}
    return {"resumed_from_epoch": int(resume["epoch"]), "train_time_s": float(resume["train_time_s"]),
            "eval_time_s": float(resume.get("eval_time_s", 0.0))}  # absent in states written before it was kept


def trial_fn(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function trainable: one sampled config -> one ``fit`` (directly or via TorchTrainer)."""
    run = ctx.space.apply(config, ctx.base)
    if ctx.distributed:
        _fit_with_torch_trainer(run, ctx)
    else:
        _fit_in_trial(run, ctx)


def _fit_in_trial(run: RunConfig, ctx: TrialContext) -> None:
    import ray
    from ray import tune

    done = finished_report(tune.get_checkpoint())
    if done is not None:  # restarted after its final report: it is finished, say so again
        tune.report(done, checkpoint=tune.get_checkpoint())
        return
    resume = load_resume_state(tune.get_checkpoint())
    t0 = time.perf_counter()
    data = get_training_data(ctx.shared_actor, run)  # asks first: torch is imported while the owner works
    import torch

    from raysearch.search.results import node_location
    from raysearch.train import fit

    if run.train.threads:  # recorded by the sweep / experiment (with_trial_threads); fit holds it too
        torch.set_num_threads(run.train.threads)
    extra = {"data_s": time.perf_counter() - t0, "node_id": ray.get_runtime_context().get_node_id(),
             **node_location(), **resumed_totals(resume)}
    reporter = EpochReporter(tune.report, tune.Checkpoint.from_directory, every=ctx.checkpoint_every,
                             max_t=ctx.max_t, write_state=True, extra=extra, overhead=ctx.checkpoint_overhead,
                             mtbf=ctx.checkpoint_mtbf)
    res = fit(run, data, callback=reporter, resume=resume, epoch_state=ctx.checkpoint_every > 0)
    final = {**final_metrics(res), **reporter.extra, **weight_report(run, data), **reporter.totals()}
    with tempfile.TemporaryDirectory(prefix="raysearch-model-") as tmp:
        _save_model(res, run, data, tmp, final, weights=ctx.save_weights)
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: DDP ``fit`` on the shared data; rank 0's epochs reach Tune via the callback."""
    import ray
    import ray.train

    run = from_dict(RunConfig, config["run"], where="trial config")
    rank = ray.train.get_context().get_world_rank()
    resume = load_resume_state(ray.train.get_checkpoint())
    t0 = time.perf_counter()
    data = get_training_data(config["shared_actor"], run)  # asks first: the training imports run while it is fetched
    import torch

    from raysearch.search.results import node_location
    from raysearch.train import fit

    torch.set_num_threads(run.train.threads)  # torch_trainer set it from the worker's CPUs
    rt = ray.get_runtime_context()
    extra = {"data_s": time.perf_counter() - t0, "node_id": rt.get_node_id(),
             "gpu_ids": ",".join(map(str, rt.get_accelerator_ids().get("GPU", []))),
             **node_location(), **resumed_totals(resume)}
    # every rank must call ray.train.report (a barrier in Train V2); rank 0 writes the checkpoints
    # only rank 0 writes state, so only its checkpoint cadence matters; every rank reports every epoch
    reporter = EpochReporter(ray.train.report, ray.train.Checkpoint.from_directory, every=config["checkpoint_every"],
                             max_t=config["max_t"], write_state=rank == 0, extra=extra,
                             overhead=config.get("checkpoint_overhead", 0.0), mtbf=config.get("checkpoint_mtbf", 0.0))
    res = fit(run, data, callback=reporter, distributed=True, callback_all_ranks=True, resume=resume,
              epoch_state=config["checkpoint_every"] > 0)
    final = {**final_metrics(res), **reporter.extra, **weight_report(run, data), **reporter.totals()}
    with tempfile.TemporaryDirectory(prefix="raysearch-model-") as tmp:
        ckpt = None
        if rank == 0:
            _save_model(res, run, data, tmp, final, weights=config.get("save_weights", True))
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(final, checkpoint=ckpt)


def torch_trainer(run: RunConfig, *, workers: int, cpus_per_worker: float, gpus_per_worker: float,
                  shared_actor: str, name: str, storage: str, callbacks: list[Any], max_t: int = 0,
                  checkpoint_every: int = 1, max_failures: int = 2, save_weights: bool = True,
                  checkpoint_overhead: float = 0.0, checkpoint_mtbf: float = 0.0) -> Any:
    """A ``TorchTrainer`` running DDP ``fit`` for ``run`` (a sweep trial or ``raysearch train --workers``).

    Reusing ``name`` under ``storage`` resumes from that run's latest checkpoint (Train V2 restores
    a run by name), which is how a restarted trial continues.
    """
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as TrainRunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run = with_threads(run, cpus_per_worker)  # what a DDP sweep trial records (with_trial_threads)
    res_per_worker: dict[str, float] = {"CPU": cpus_per_worker}
    if gpus_per_worker > 0:
        res_per_worker["GPU"] = gpus_per_worker
    return TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"run": to_dict(run), "shared_actor": shared_actor, "cpus_per_worker": cpus_per_worker,
                           "max_t": max_t, "checkpoint_every": checkpoint_every, "save_weights": save_weights,
                           "checkpoint_overhead": checkpoint_overhead, "checkpoint_mtbf": checkpoint_mtbf},
        # PACK: a trial's workers fill one node before the next, so GPU nodes are not split between trials
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker=res_per_worker, placement_strategy="PACK"),
        # train.device: cpu on GPU workers trains on CPU: gloo, not Ray's default nccl for GPU workers
        torch_config=TorchConfig(backend="gloo") if run.train.device == "cpu" else None,
        run_config=TrainRunConfig(name=name, storage_path=storage, callbacks=callbacks,
                                  failure_config=FailureConfig(max_failures=max_failures),
                                  checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )


def _fit_with_torch_trainer(run: RunConfig, ctx: TrialContext) -> dict[str, Any]:
    from raysearch._gc import gc_paused

    with gc_paused(freeze=True):  # a fresh trial process: these import torch (Ray Train's TorchTrainer needs it)
        from ray import tune
        from ray.train.torch import TorchTrainer  # noqa: F401
        from ray.tune.integration.ray_train import TuneReportCallback

    from raysearch._ray_compat import set_train_health_check_interval
    from raysearch.search.cluster import worker_cpus

    # the controller inherits this process's env: its 2 s default poll adds seconds to every start/stop
    set_train_health_check_interval(ctx.train_poll_s)
    w = ctx.workers_per_trial
    trainer = torch_trainer(
        run, workers=w, cpus_per_worker=worker_cpus(ctx.cpus_per_trial, w), gpus_per_worker=ctx.gpus_per_trial / w,
        shared_actor=ctx.shared_actor, name=f"train-{tune.get_context().get_trial_id()}", storage=ctx.storage,
        callbacks=[TuneReportCallback()], max_t=ctx.max_t, checkpoint_every=ctx.checkpoint_every,
        checkpoint_overhead=ctx.checkpoint_overhead, checkpoint_mtbf=ctx.checkpoint_mtbf,
        max_failures=ctx.max_failures, save_weights=ctx.save_weights)
    result = trainer.fit()
    return dict(result.metrics or {})


def with_resources(ctx: TrialContext) -> Any:
    from ray import tune

    from raysearch.search.cluster import trial_resources

    res = trial_resources(ctx.distributed, ctx.cpus_per_trial, ctx.gpus_per_trial)
    return tune.with_resources(tune.with_parameters(trial_fn, ctx=ctx), res)



def fit_distributed(run: RunConfig, workers: int, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                    storage: str | None = None, address: str | None = None) -> tuple[dict[str, Any], str | None]:
    """``raysearch train --workers W``: the same DDP ``fit`` a sweep trial runs, outside a sweep.

    Returns the final metrics and the saved model directory (rank 0's last checkpoint).  The data
    owner and the worker loop are the sweep's, so a DDP trial's ``best.yaml`` reproduces here.
    """
    import uuid

    import ray

    from raysearch import paths
    from raysearch.search.cluster import init_ray
    from raysearch.search.shared import SHARED_ACTOR_PREFIX, start_shared_actor

    init_ray(address)
    name = f"train-{uuid.uuid4().hex[:8]}"
    actor = start_shared_actor(SHARED_ACTOR_PREFIX + name)
    try:
        ray.get(actor.check.remote(run.dataset, run.data_root))
        trainer = torch_trainer(run, workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                                shared_actor=SHARED_ACTOR_PREFIX + name, name=name,
                                storage=storage or str(paths.runs_dir(run.data_root)), callbacks=[],
                                checkpoint_every=0, max_failures=0)
        result = trainer.fit()
    finally:
        ray.kill(actor)
    return dict(result.metrics or {}), (result.checkpoint.path if result.checkpoint else None)
