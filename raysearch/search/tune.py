"""The sweep engine: Ray Tune + OptunaSearch (TPE) + ASHA over ``raysearch.train.fit``.

This module keeps the sweep itself (settings, start, resume, results); its parts live beside it:
``shared`` (the data owner on the driver's node), ``trainables`` (what a trial runs, per-epoch
checkpoints, the TorchTrainer path), ``cluster`` (Ray start-up, resource checks, placement
groups), ``results`` (stop reasons and the results frame), ``tracking`` (W&B from the driver).

Design choices (why, not what):

* **One worker per trial** (the default) runs ``fit`` directly inside a Tune *function* trainable
  (actors reused between trials).  A ``TorchTrainer`` costs tens of seconds of fixed start-up, so
  it is only built for ``--workers-per-trial > 1`` or ``--gpus-per-trial > 0`` (Train V2: the
  trial builds the trainer; its reports reach Tune through ``TuneReportCallback``, so ASHA stops
  it too).  Ray Train frees a stopped trial's placement group through the State API, so DDP
  sweeps need the dashboard (``ray[default]``): checked up front instead of hanging.
* **ASHA's time attribute is the epoch** (``asha_epoch``) and ``stop_last_trials=False``; the last
  planned epoch is reported without it, so a rung at ``max_t`` judges the final report (test mAP
  + model) and never cuts a finished trial off before it.
* **Faults**: ``FailureConfig(max_failures)`` restarts a trial whose node was lost from its last
  per-epoch checkpoint; retries are counted per trial (``results.parquet`` column ``retries``).
* **Resume** restores the Tuner from ``<storage>/<name>`` (searcher and scheduler state included).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from raysearch import paths
from raysearch._io import run_lock, write_json
from raysearch.choices import SCHEDULERS, SEARCHERS
from raysearch.config import ConfigError, SweepConfig, contradictions
from raysearch.search import cluster
from raysearch.search.results import StopReason, classify, results_frame, trial_failure, write_results
from raysearch.search.shared import SHARED_ACTOR_PREFIX, prefetch_runs, start_shared_actor
from raysearch.search.space import SearchSpace, default_space_path, load_space
from raysearch.search.tracking import WandbSettings, sweep_wandb_callback, wandb_mode
from raysearch.search import trainables
from raysearch.search.trainables import ASHA_ATTR, METRIC, TrialContext

log = logging.getLogger(__name__)

MODE = "max"


@dataclass
class SweepResult:
    run_dir: Path
    results: pd.DataFrame
    best_yaml: Path | None
    shared_stats: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    interrupted: bool = False             # fewer trials than the budget (Ctrl+C, time budget): --resume
    asha: dict[str, Any] | None = None     # the rungs as run (flags over the space's): grace, rf, metric


def _storage_and_dir(cfg: SweepConfig, name: str) -> tuple[str, Path]:
    """Ray storage path (local absolute path or URI) and the local run directory for our outputs."""
    storage = cfg.storage or str(paths.runs_dir(cfg.data_root))
    if "://" in storage:
        return storage, paths.runs_dir(cfg.data_root) / name
    storage = str(Path(storage).expanduser().resolve())
    return storage, Path(storage) / name


#: the run directory's record of the sweep's settings (read back by --resume, results, dashboard)
SWEEP_FILE = "sweep.json"
#: settings a resumed sweep takes from the new command (where to run now and how to show it, not
#: what); ``wandb`` can only be turned off (``--no-wandb``): the restored Tuner keeps the rest
RESUME_RUNTIME_FIELDS = ("resume", "address", "name", "storage", "status_every")
#: sweep.json keys every version wrote: a record without one of them is incomplete
_SAVED_REQUIRED = ("dataset", "trials", "scheduler", "search", "seed", "cpus_per_trial", "workers_per_trial")


def saved_sweep(run_dir: Path) -> dict[str, Any]:
    """``sweep.json`` of ``run_dir``, readable and complete, or a one-line error naming it."""
    p = run_dir / SWEEP_FILE
    if not p.is_file():
        raise ConfigError(f"--resume: no restorable sweep at {run_dir} (no {SWEEP_FILE}; was it started with this "
                          "--storage/--name?)")
    try:
        meta = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{p}: unreadable or truncated ({type(e).__name__}: {' '.join(str(e).split())[:120]}); "
                          "the sweep cannot be resumed from it") from None
    sweep = meta.get("sweep") if isinstance(meta, dict) else None
    missing = ["sweep"] if not isinstance(sweep, dict) else [k for k in _SAVED_REQUIRED if k not in sweep]
    if missing:
        raise ConfigError(f"{p}: incomplete sweep record (missing {', '.join(missing)}); cannot resume")
    return meta


def original_sweep_config(cfg: SweepConfig, given: frozenset[str] | None = None) -> SweepConfig:
    """The settings a sweep was started with (``sweep.json``), for ``--resume``.

    The restored Tuner keeps its searcher and scheduler; the trials' space, epochs, method and
    resources must match them, so only where to run (``--address``, ``--storage``) comes from the
    new command, and ``--no-wandb`` may turn W&B off.  A flag of the new command that contradicts
    the saved settings is refused with the list of differences (a flag left at its default is not
    a contradiction: ``--resume --name N`` alone continues the sweep as it was; ``given``, the flags
    the command line really set, are compared even at their default).
    """
    if not cfg.name:
        raise ConfigError("--resume needs the --name of the sweep to continue")
    _, run_dir = _storage_and_dir(cfg, cfg.name)
    p = run_dir / SWEEP_FILE
    orig = dict(saved_sweep(run_dir)["sweep"])
    known = {f.name for f in dataclasses.fields(SweepConfig)}
    unknown = sorted(set(orig) - known)
    if unknown:
        raise ConfigError(f"{p}: not a sweep.json written by this version (unknown settings: "
                          f"{', '.join(unknown)[:200]}); cannot resume")
    for k in ("grace_period", "reduction_factor"):  # saved before 0 was refused: it meant "the space's"
        if orig.get(k) == 0:
            orig[k] = None
    try:
        saved = SweepConfig(**{**orig, "resume": False, "address": None})
    except (TypeError, ValueError) as e:  # ConfigError included: a saved value this version refuses
        raise ConfigError(f"{p}: not a sweep record this version can resume ({' '.join(str(e).split())[:200]})") from None
    diffs = contradictions(cfg, saved, skip=(*RESUME_RUNTIME_FIELDS, "wandb"), flags=given)
    if diffs:
        raise ConfigError(f"--resume: the command contradicts the saved sweep ({p}): " + "; ".join(diffs)
                          + ". Drop those flags to continue it, or start a new sweep with another --name")
    runtime = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(SweepConfig) if f.name in RESUME_RUNTIME_FIELDS}
    if cfg.storage is None:
        runtime["storage"] = saved.storage
    return dataclasses.replace(saved, **runtime, wandb=saved.wandb and cfg.wandb)


def check_same_dataset(meta: dict[str, Any], fingerprint: str, where: Path) -> None:
    """A resumed sweep must see the content its finished trials saw (``sweep.json``'s fingerprint)."""
    old = meta.get("dataset_fingerprint")
    if old is None:
        log.warning("%s predates dataset fingerprints: cannot check that the dataset is unchanged since the "
                    "sweep began (recorded now)", where)
    elif old != fingerprint:
        raise ConfigError(f"--resume: dataset {meta['sweep'].get('dataset')!r} changed since the sweep began "
                          f"(fingerprint {str(old)[:12]} -> {fingerprint[:12]}, {where}); its finished trials would be "
                          "compared with trials on other content. Start a new sweep with another --name")


def space_record(space: SearchSpace) -> dict[str, Any]:
    """What a sweep's trials are built from (the space's base config, parameters and rungs), as
    ``sweep.json`` keeps it for :func:`check_same_space`."""
    from raysearch.config import to_dict

    rec = to_dict(space)
    rec.pop("path", None)
    rec["params"] = {p["name"]: p for p in rec["params"]}
    return json.loads(json.dumps(rec, default=str))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def space_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The base-config and parameter differences between two :func:`space_record` s, one entry per
    changed key (a parameter added or removed is one entry).  A field only one record has comes
    from another raysearch version's config classes, not from an edit (a record always holds every
    field), so it is not a change."""
    from raysearch.errors import short

    out = []
    o_params, n_params = old.get("params") or {}, new.get("params") or {}
    out += [f"params.{k} removed" for k in o_params if k not in n_params]
    out += [f"params.{k} added" for k in n_params if k not in o_params]
    a = _flat({"base": old.get("base"), "params": {k: v for k, v in o_params.items() if k in n_params}})
    b = _flat({"base": new.get("base"), "params": {k: v for k, v in n_params.items() if k in o_params}})
    out += [f"{k} {short(a[k], 60)} -> {short(b[k], 60)}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return out


def check_same_space(meta: dict[str, Any], space: SearchSpace, where: Path) -> None:
    """A resumed sweep's new trials must be built like its finished ones: the base config comes
    from the space file as it is now, while the restored searcher samples the original parameters
    (an edited range would silently not apply, or decode wrongly).  So an edit of the file's base
    config or parameters since the sweep began is refused; new rungs are not (the restored Tuner
    keeps its scheduler, and the summary reports the recorded rungs)."""
    old = meta.get("space")
    if old is None:
        log.warning("%s predates search-space records: cannot check that %s is unchanged since the sweep began "
                    "(recorded now)", where, space.path)
        return
    if not isinstance(old, dict):
        raise ConfigError(f"{where}: 'space' is not a search-space record ({type(old).__name__}); cannot resume")
    new = space_record(space)
    rungs = [f"{k} {old[k]} -> {new[k]}" for k in ("grace_period", "reduction_factor", "rung_metric")
             if k in old and old[k] != new.get(k)]
    if rungs:
        log.warning("%s's ASHA settings changed since the sweep began (%s): the resumed sweep keeps the rungs it "
                    "began with; the new ones apply to a new sweep", space.path, "; ".join(rungs))
    diffs = space_changes(old, new)
    if diffs:
        more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        raise ConfigError(f"--resume: search space {space.path} changed since the sweep began ({'; '.join(diffs[:4])}"
                          f"{more}; {where}): the sweep's searcher samples the parameters it began with and its new "
                          "trials would take the edited base config. Restore the file, or start a new sweep with "
                          "another --name")


def build_space(cfg: SweepConfig) -> SearchSpace:
    space = load_space(cfg.space or default_space_path(cfg.dataset))
    space = space.with_base(dataset=cfg.dataset, data_root=cfg.data_root)
    if cfg.epochs:
        space = dataclasses.replace(space, base=dataclasses.replace(
            space.base, train=dataclasses.replace(space.base.train, epochs=cfg.epochs)))
    if cfg.method:
        if cfg.method != "all":
            from raysearch.train.methods import METHODS

            METHODS.get(cfg.method)  # a typo names the method and the choices, not the space file
        space = space.with_method(cfg.method)
    return space


# not *.json / *.pkl: Tune's restore downloads those from the experiment dir into its driver
# staging dir and every later sync-up copies them back, overwriting what a resumed sweep wrote
ASHA_STOPPED_FILE = "asha_stopped.ids"


def asha_settings(cfg: SweepConfig, space: SearchSpace) -> dict[str, Any] | None:
    """The ASHA rungs a new sweep runs (its flags over the space's ``asha:``; ``max_t`` is the
    space's ``train.epochs``), None without ASHA: what the scheduler is built with, and what
    ``sweep.json`` records for the printed summary (:func:`sweep_asha`)."""
    if not SCHEDULERS.get(cfg.scheduler).rungs:
        return None
    epochs = space.base.train.epochs
    return {"grace_period": min(cfg.grace_period or space.grace_period, epochs),
            "reduction_factor": cfg.reduction_factor or space.reduction_factor,
            "metric": cfg.rung_metric or space.rung_metric}


def sweep_asha(meta: dict[str, Any] | None, cfg: SweepConfig, space: SearchSpace) -> dict[str, Any] | None:
    """The rungs a sweep runs: a resumed one's as ``sweep.json`` recorded them (its restored Tuner
    keeps the scheduler it started with, even if the space file changed since; None for a sweep
    saved before they were recorded), a new one's from its settings."""
    return meta.get("asha") if meta is not None else asha_settings(cfg, space)


def asha_scheduler(cfg: SweepConfig, space: SearchSpace, run_dir: Path) -> Any:
    """``--scheduler asha`` (:data:`raysearch.choices.SCHEDULERS`): rungs at epochs, up to the space's last,
    judged on ``--rung-metric`` (else the space's ``asha.metric``)."""
    a = asha_settings(cfg, space)
    return _asha(run_dir / ASHA_STOPPED_FILE, a["metric"], time_attr=ASHA_ATTR, max_t=space.base.train.epochs,
                 grace_period=a["grace_period"], reduction_factor=a["reduction_factor"], stop_last_trials=False)


def _asha(record: Path, rung_metric: str = METRIC, **kw: Any) -> Any:
    """An ``ASHAScheduler`` that records the trials it stops in ``record`` (read back after the
    sweep and across ``--resume``), so the results tell an ASHA stop from a trial the sweep left
    unfinished, and compares ``rung_metric`` at its rungs.  The sweep's metric (TuneConfig, the
    searcher, the pick) stays :data:`METRIC`: Tune refuses a scheduler with a metric of its own
    next to TuneConfig's, so ASHA is handed each result with ``rung_metric`` in METRIC's place (a
    final report carries it for its best epoch, as METRIC; a result without it counts as NaN, which
    never stops a trial and which ASHA's cutoffs ignore).  Built lazily: it subclasses Ray's class."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    def judged(result: dict) -> dict:
        if rung_metric == METRIC:
            return result
        v = result.get(rung_metric)
        return {**result, METRIC: float("nan") if v is None else v}

    class RecordingASHA(ASHAScheduler):
        def on_trial_complete(self, tune_controller, trial, result):
            super().on_trial_complete(tune_controller, trial, judged(result))

        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, judged(result))
            if action == TrialScheduler.STOP and not result.get("final"):
                stopped = _read_ids(record)
                stopped.add(trial.trial_id)
                write_json(record, sorted(stopped))
            return action

    return RecordingASHA(**kw)


def _read_ids(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text()))
    except (OSError, ValueError):
        return set()


def _retry_counter(run_dir: Path) -> Any:
    """A Tune callback counting restarts per trial (kept in ``retries.ids`` across --resume; JSON)."""
    from ray.tune import Callback

    path = run_dir / "retries.ids"  # not *.json: see ASHA_STOPPED_FILE

    class RetryCounter(Callback):
        def __init__(self) -> None:
            self.counts: dict[str, int] = json.loads(path.read_text()) if path.is_file() else {}

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.counts[trial.trial_id] = self.counts.get(trial.trial_id, 0) + 1
            log.warning("trial %s failed (%s); restart %d from its last checkpoint", trial.trial_id,
                        trial_failure(trial), self.counts[trial.trial_id])
            write_json(path, self.counts)

    return RetryCounter()


def _check_new_run(cfg: SweepConfig, name: str, exp_path: str, run_dir: Path) -> None:
    """Before anything is written: a new sweep must not reuse a name, a resume must find one."""
    from ray import tune

    if cfg.resume:
        if not tune.Tuner.can_restore(exp_path):
            raise ConfigError(f"--resume: no restorable sweep at {exp_path}")
    elif tune.Tuner.can_restore(exp_path) or (run_dir / "sweep.json").exists():
        raise ConfigError(f"a sweep named {name!r} already exists at {exp_path}; use --resume or another --name")


def _make_tuner(cfg: SweepConfig, space: SearchSpace, trainable: Any, name: str, storage: str,
                callbacks: list[Any], max_conc: int, run_dir: Path) -> Any:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    searcher = SEARCHERS.get(cfg.search)
    # the space's base config (the paper's defaults) is the first configuration TPE sees, so the
    # domain's default is always tried (with two trials at once another can reach a rung first and
    # cut it there)
    points = [default_point(space)] if cfg.seed_defaults and searcher.seeds_defaults else None
    search = OptunaSearch(space.define_by_run(), metric=METRIC, mode=MODE, sampler=searcher.sampler(cfg),
                          points_to_evaluate=points or None)
    scheduler = SCHEDULERS.get(cfg.scheduler).build(cfg, space, run_dir)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=search, scheduler=scheduler,
            num_samples=cfg.trials, max_concurrent_trials=max_conc,
            reuse_actors=not cfg.distributed, time_budget_s=cfg.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=callbacks, verbose=0,
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def default_point(space: SearchSpace) -> dict[str, Any]:
    """The base config's value of every searched parameter that is active and inside its domain
    (Optuna-encoded; those outside are left to the sampler)."""
    from raysearch.config import to_dict

    base = to_dict(space.base)
    point: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    for p in space.params:
        if not all(chosen.get(c) in vals for c, vals in p.when):
            continue
        section, key = p.name.split(".", 1)
        v = base.get(section, {}).get(key)
        if p.kind == "categorical":
            v = tuple(v) if isinstance(v, list) else v
            if v not in p.choices:
                continue
            point[p.name] = p.encoded_choices[list(p.choices).index(v)]
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and p.low <= v <= p.high:
            point[p.name] = v
        else:
            continue
        chosen[p.name] = v
    return point


def _auto_loggers(callbacks: list[Any]) -> list[Any]:
    """results need each trial's result.json: add the JSON logger when auto loggers are disabled
    (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``), else Ray warns "Failed to fetch metrics"."""
    if os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0") == "1":
        from ray.tune.logger import JsonLoggerCallback

        return [JsonLoggerCallback(), *callbacks]
    return callbacks


def run_sweep(cfg: SweepConfig, space: SearchSpace | None = None, callbacks: Sequence[Any] = (),
              progress: bool | None = None, given: frozenset[str] | None = None,
              owner: str | None = None) -> SweepResult:
    """Run (or ``--resume``) a sweep and write ``results.parquet`` / ``best.yaml`` in the run directory.

    Everything that can be refused (name, dataset, resources, State API) is checked before a file
    is written or a trial starts; an interrupted sweep still writes its results.  A ``--resume`` is
    checked against ``sweep.json`` (readable and complete, the same dataset content, no contradicting
    flag), and the sweep's name is locked for the whole run: a second command on it is refused.

    ``owner``: the actor name of a data owner that outlives this sweep (the experiment's nested
    tuning runs all its searches on one, warm): used, not started or stopped here; the
    ``shared_objects.json`` it leaves then holds that owner's counters so far, named by ``owner``.
    """
    t0 = time.perf_counter()
    if cfg.resume and not cfg.name:
        raise ConfigError("--resume needs the --name of the sweep to continue")
    name = cfg.name or f"{Path(cfg.dataset).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    # one command per sweep name: a second one started meanwhile is refused before anything starts
    with run_lock(_storage_and_dir(cfg, name)[1], what=f"sweep {name!r}"):
        return _run_sweep(cfg, name, space, callbacks, progress, t0, given, owner)


def _run_sweep(cfg: SweepConfig, name: str, space: SearchSpace | None, callbacks: Sequence[Any],
               progress: bool | None, t0: float, given: frozenset[str] | None = None,
               owner: str | None = None) -> SweepResult:
    from ray import tune

    from raysearch.data import load_dataset
    from raysearch.search.live import sweep_progress

    meta, saved_at = None, _storage_and_dir(cfg, name)[1] / SWEEP_FILE
    if cfg.resume:
        meta = saved_sweep(saved_at.parent)  # readable and complete, or one line naming it
        cfg = original_sweep_config(cfg, given)
    space = space or build_space(cfg)
    # the trials' torch thread count goes into their configs (and best.yaml): results depend on it
    space = dataclasses.replace(space, base=trainables.with_trial_threads(space.base, cfg))
    storage, run_dir = _storage_and_dir(cfg, name)
    exp_path = f"{storage.rstrip('/')}/{name}"
    # the dataset is read on this (the driver's) node: a missing one is one error here, not N failed trials
    ds = load_dataset(space.base.dataset, cfg.data_root)
    if meta is not None:
        check_same_dataset(meta, ds.fingerprint, saved_at)
        check_same_space(meta, space, saved_at)
    _check_new_run(cfg, name, exp_path, run_dir)
    actor_name = owner or f"{SHARED_ACTOR_PREFIX}{name}"
    actor, checked = _start_cluster(cfg, space, actor_name)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_meta(run_dir, cfg, space, name, ds.fingerprint)
    trainable = trainables.with_resources(_trial_context(cfg, space, actor_name, storage))  # the one trial engine
    retries = _retry_counter(run_dir)
    total = json.loads((run_dir / SWEEP_FILE).read_text())["sweep"]["trials"]
    wb = sweep_wandb_callback(WandbSettings(enabled=cfg.wandb, project=cfg.wandb_project, group=name,
                                            dir=str(run_dir), mode=wandb_mode() if cfg.wandb else "disabled"),
                              space, functools.partial(_stop_reason, cfg, space, run_dir))
    status = sweep_progress(total, enabled=progress, interval_s=cfg.status_every)
    cbs = _auto_loggers([retries, status, *([wb] if wb else []), *callbacks])
    if cfg.resume:
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True)
        # the restored scheduler keeps its memory of stopped trials; callbacks are ours again
        from raysearch._ray_compat import set_restored_callbacks

        set_restored_callbacks(tuner, cbs)
    else:
        conc = cluster.max_concurrent(cfg.max_concurrent, cfg.trials, cfg.cpus_per_trial, cfg.gpus_per_trial)
        tuner = _make_tuner(cfg, space, trainable, name, storage, cbs, conc, run_dir)
    try:
        with warnings.catch_warnings():
            # a trial restarted from its checkpoint reports the epochs after it again; Optuna keeps the
            # first value of each step and warns once per repeated epoch, which is expected here
            warnings.filterwarnings("ignore", message=r"The reported value is ignored because this `step=")
            grid = tuner.fit()
    finally:
        stats = _final_stats(actor, stop=owner is None, pending=[checked])
        if owner is not None:
            stats["shared_owner"] = owner
    df = results_frame(grid, space, cfg.scheduler, retries=retries.counts,
                       asha_stopped=_read_ids(run_dir / ASHA_STOPPED_FILE))
    _, best = write_results(df, run_dir)
    write_json(run_dir / "shared_objects.json", stats)
    unfinished = (df["stop_reason"] == StopReason.INTERRUPTED.value).any() if len(df) else True
    return SweepResult(run_dir=run_dir, results=df, best_yaml=best, shared_stats=stats,
                       wall_time_s=time.perf_counter() - t0, interrupted=len(df) < total or bool(unfinished),
                       asha=sweep_asha(meta, cfg, space))


def _start_cluster(cfg: SweepConfig, space: SearchSpace, actor_name: str) -> tuple[Any, Any]:
    """Ray up and resources checked, the data owner started: the last refusals before the sweep
    writes anything (the dataset was loaded by the caller).  Returns the owner and its dataset
    check, which a local sweep does not await."""
    import ray

    cluster.start_trials_engine(cfg.address, cpus_per_trial=cfg.cpus_per_trial, gpus_per_trial=cfg.gpus_per_trial,
                                workers_per_trial=cfg.workers_per_trial, distributed=cfg.distributed)
    actor = start_shared_actor(actor_name)
    check = actor.check.remote(space.base.dataset, cfg.data_root)
    if cfg.address is not None:  # joined cluster (maybe a Ray client): the owner's node may lack the dataset
        ray.get(check)
    # a local Ray: not awaited (~1.6 s of process start), the owner starts while Tune starts the first
    # trial; the dataset was just loaded on this machine, where the owner runs
    if cfg.prefetch_cf:
        actor.prefetch.remote(prefetch_runs(space))
    return actor, check


def _trial_context(cfg: SweepConfig, space: SearchSpace, actor_name: str, storage: str) -> TrialContext:
    return TrialContext(space=space, base=space.base, shared_actor=actor_name, storage=storage, settings=cfg,
                        max_t=space.base.train.epochs if SCHEDULERS.get(cfg.scheduler).rungs else 0)


def _stop_reason(cfg: SweepConfig, space: SearchSpace, run_dir: Path, trial: Any, failed: bool) -> str:
    """A trial's stop reason as the driver sees it (W&B labels each run with it)."""
    m = dict(trial.last_result or {})
    if not m.get("final") and trial.trial_id in _read_ids(run_dir / ASHA_STOPPED_FILE):
        m["asha_stopped"] = True
    return classify(m, failed, cfg.scheduler, space.base.train.epochs)


def _final_stats(actor: Any, stop: bool = True, pending: Sequence[Any] = ()) -> dict[str, Any]:
    """The data owner's counters, then stop it (``stop``: it is this sweep's own); a dead owner (its
    node lost) must not lose the results.  ``pending``: its calls not awaited (the dataset check),
    waited for a little first: a sweep with nothing left to run (a resumed finished one) would
    otherwise kill the owner mid-call, and Ray logs that task as failed."""
    import ray

    if stop and pending:
        ray.wait(list(pending), num_returns=len(pending), timeout=10)

    try:
        stats = ray.get(actor.stats.remote(), timeout=30)
    except Exception as e:  # RayActorError, GetTimeoutError: the results matter more than the counters
        log.warning("shared-data stats unavailable: %s", type(e).__name__)
        stats = {}
    if not stop:
        return stats
    try:
        ray.kill(actor)
    except Exception:
        pass
    return stats


def _write_meta(run_dir: Path, cfg: SweepConfig, space: SearchSpace, name: str, fingerprint: str) -> None:
    """``sweep.json``: the settings and the dataset fingerprint a ``--resume`` is checked against."""
    meta = {"name": name, "sweep": dataclasses.asdict(cfg), "space_file": space.path,
            "params": space.names, "wandb_project": cfg.wandb_project, "dataset_fingerprint": fingerprint,
            "asha": asha_settings(cfg, space),  # as run: a flag left unset takes the space's value
            "space": space_record(space)}
    p = run_dir / SWEEP_FILE
    if cfg.resume and p.is_file():  # the restored Tuner keeps the original settings: so does sweep.json
        meta = saved_sweep(run_dir)
        meta["resumed"] = meta.get("resumed", 0) + 1
        meta.setdefault("dataset_fingerprint", fingerprint)  # a record of an older version: checked from now on
        if meta.get("space") is None:
            meta["space"] = space_record(space)
    write_json(p, meta)
