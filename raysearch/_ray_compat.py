"""The one place raysearch touches Ray's private names and undocumented behaviour.

Ray is pinned to one minor (``ray>=2.60,<2.61``) because of what is here: every entry relies on
something Ray does not promise, says why it is needed, and has a contract test in
``tests/test_ray_compat.py`` that fails, naming the entry, when a Ray upgrade changes it.  That test
also keeps private Ray names out of every other module.  Upgrading Ray: run it, fix what it names
here, widen the pin.

Importing this module imports no Ray (the CLI and the tests' ``conftest`` import it cheaply): each
entry imports what it needs when called.  The W&B classes are built on first access (module
``__getattr__``) because Ray's W&B integration takes ~1 s to import.
"""
from __future__ import annotations

import os
import threading
from typing import Any

# --- Ray Train: the controller's poll interval --------------------------------------------------

#: Ray Train V2's controller poll interval (seconds, default 2), read from the environment by its
#: controller (``ray.train.v2`` internal constants), which gets it from the process that calls
#: ``trainer.fit()`` (Ray Train propagates its env vars from the driver to the controller).
TRAIN_HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def set_train_health_check_interval(seconds: float) -> None:
    """Poll a DDP trial's Ray Train controller every ``seconds``: its 2 s default adds seconds to
    every start/stop.  Relies on the controller reading ``TRAIN_HEALTH_CHECK_ENV`` from the env
    of the process that calls ``trainer.fit()`` (no public setting exists)."""
    os.environ[TRAIN_HEALTH_CHECK_ENV] = str(seconds)


# --- Ray start-up: the GCS wait ----------------------------------------------------------------

#: Ray's internal config override for how long a starting node waits for its GCS (seconds; Ray's
#: default 30), read by Ray's node start-up code (``ray/_private/node.py``).  The raylet's own 30 s
#: registration wait is fixed there (no setting): named in start-up errors as the way around a slow
#: machine.
GCS_WAIT_ENV = "RAY_gcs_server_port_wait_time_s"


def temp_dir_init_kwargs(path: str) -> dict[str, Any]:
    """``ray.init`` keywords for a local instance whose session folders go straight under ``path``
    (``RAY_TMPDIR`` alone adds a ``ray/`` level): Ray's ``_temp_dir`` keyword is private."""
    return {"_temp_dir": path}


# --- The dashboard (State API) address ---------------------------------------------------------

def api_server_url(address: str) -> str | None:
    """The dashboard (State API) URL of the cluster at ``address``, read from its GCS; ``None``
    when it has none.  Relies on ``ray.dashboard.utils.ray_address_to_api_server_url`` (not public
    API): Ray Train's placement-group cleaner must be told which State API to ask."""
    try:
        from ray.dashboard.utils import ray_address_to_api_server_url

        return ray_address_to_api_server_url(address)
    except Exception:  # no dashboard, minimal Ray, an address only Ray Client understands
        return None


# --- Tune: callbacks of a restored Tuner, the Trials behind a ResultGrid -----------------------

def set_restored_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Give a restored ``Tuner`` new callbacks: ``Tuner.restore`` keeps the (pickled) callbacks it
    was built with and has no public way to replace them, so set them on its private
    ``_local_tuner``'s run config (a mutable ``RunConfig.callbacks``)."""
    tuner._local_tuner.get_run_config().callbacks = callbacks


def result_grid_trials(grid: Any, n: int) -> list[Any]:
    """The Tune ``Trial`` behind each of the ``n`` ``Result``\\ s of ``grid`` (same order:
    ``ResultGrid`` builds one per trial of its private ``_experiment_analysis``); ``None`` each where
    unavailable (a hand-built grid).  A trial that never reported has its config only there."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None)
    if trials is None or len(trials) != n:
        return [None] * n
    return list(trials)


# --- W&B: Ray's WandbLoggerCallback with its private hooks replaced ----------------------------

_WANDB_NAMES = ("WandbRunsActor", "DriverWandbCallback")
_wandb_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name in _WANDB_NAMES:
        with _wandb_lock:
            if name not in globals():
                _define_wandb_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_wandb_classes() -> None:
    """A logging actor shared by a sweep's trials, and a subclass of ``WandbLoggerCallback`` that
    feeds it.  Relies on the callback's private per-trial bookkeeping (``_trial_logging_actors``,
    ``_trial_queues``, ``_trial_logging_futures``, ``_logging_future_to_trial``) and hooks
    (``_start_logging_actor``, ``_signal_logging_actor_stop``, ``_cleanup_logging_actor``), on
    ``_WandbLoggingActor._handle_result`` (which result keys are logged, which go to the config),
    the log cleaner ``_clean_log`` and actor placement ``_force_on_current_node``.  Published as
    module globals under plain names, so pickle (Tune's callbacks, Ray's actor class) finds them by
    reference."""
    import logging
    import types

    import ray
    from ray.air.integrations.wandb import WANDB_ENV_VAR, WandbLoggerCallback, _clean_log, _WandbLoggingActor
    from ray.air.util.node import _force_on_current_node

    log = logging.getLogger("raysearch.wandb")

    class WandbRunsActor:
        """Every W&B run of one sweep, in one process (``wandb.init(reinit="create_new")``).

        Why not Ray's actor per trial: each trial then starts two processes (its logging actor and a
        queue actor), imports wandb and starts a W&B service, ~3 s of CPU per trial; an experiment's
        units are short trials, hundreds of them, and that work slowed them by ~70% (measured by
        ``bench/bench_experiment.py --wandb``).  Here the service starts once and a run costs ~0.1 s.
        One caller (the driver's callback) and one thread: calls run in the order they were sent,
        so a run's results follow its start and precede its finish.  The trials never wait for it
        (every call is fire-and-forget); online, W&B's server round trips of one run delay the
        logging of the runs queued behind it, not the sweep.  One failing run is logged and
        dropped; the other runs go on.  The W&B key comes from a file on this node (``key_file``),
        never from a ``runtime_env``."""

        def __init__(self, key_file: str | None = None) -> None:
            if key_file:  # the actor runs on the driver's node (_force_on_current_node), where the file is
                with open(key_file) as f:
                    os.environ[WANDB_ENV_VAR] = f.read()
            import wandb

            self._wandb = wandb
            self._runs: dict[str, Any] = {}

        def start(self, key: str, exclude: list[str], to_config: list[str], init_kwargs: dict[str, Any]) -> None:
            """A new run.  wandb fills an ``init`` argument left out or None (tags, group, notes) from
            the process's previous run: the callback passes every per-trial field (id, name, group,
            config, tags) each time, and tags default to none here."""
            try:
                run = self._wandb.init(**{"tags": [], **init_kwargs, "reinit": "create_new"})
            except Exception as e:  # this run is lost, not the others
                log.error("W&B run %s could not start: %s", init_kwargs.get("name", key), e)
                return
            # _exclude/_to_config: what _WandbLoggingActor._handle_result reads (keys left out, keys sent to the config)
            self._runs[key] = types.SimpleNamespace(run=run, _exclude=set(exclude), _to_config=set(to_config), exit_code=0)

        def log(self, key: str, result: dict) -> None:
            entry = self._runs.get(key)
            if entry is None:
                return
            run = entry.run
            try:
                if "__summary__" in result:  # the trial's end: stop reason and final metrics
                    summary = dict(result["__summary__"])
                    entry.exit_code = 1 if summary.get("stop_reason") in ("error", "interrupted") else 0
                    for k, v in summary.items():
                        run.summary[k] = v
                    return
                values, config_update = _WandbLoggingActor._handle_result(entry, result)
                if config_update:
                    run.config.update(config_update, allow_val_change=True)
                run.log(values, step=int(values["epoch"]) if "epoch" in values else None)
            except Exception as e:
                log.warning("W&B run %s: a result was not logged: %s", run.name, e)

        def finish(self, key: str) -> None:
            entry = self._runs.pop(key, None)
            if entry is not None:
                try:
                    entry.run.finish(exit_code=entry.exit_code)
                except Exception as e:
                    log.warning("W&B run %s did not finish cleanly: %s", entry.run.name, e)

    class DriverWandbCallback(WandbLoggerCallback):
        """Ray's ``WandbLoggerCallback`` (its settings, key and project handling, per-trial bookkeeping,
        the wait for pending uploads at the end) logging every trial through one
        :class:`WandbRunsActor`, started on the first trial and stopped at the sweep's end.  Subclasses
        use only the public hooks below (``has_run``, ``start_run``, ``EXTRA_EXCLUDED_RESULTS``,
        ``wandb_key_file``, ``trial_summary``)."""

        #: result keys never logged, on top of Ray's own (its private ``_exclude_results``)
        EXTRA_EXCLUDED_RESULTS: tuple[str, ...] = ()

        def __init_subclass__(cls, **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            cls._exclude_results = WandbLoggerCallback._exclude_results + list(cls.EXTRA_EXCLUDED_RESULTS)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.upload_checkpoints:  # Ray's actor uploads them; a sweep keeps them in its run directory
                raise ValueError("DriverWandbCallback does not upload checkpoints (upload_checkpoints=True)")

        def __getstate__(self) -> dict:
            # Tune pickles its callbacks: a copy neither holds, feeds nor stops this sweep's actor and runs
            state = {k: v for k, v in self.__dict__.items() if k not in ("_runs_actor", "_run_seq")}
            for k in ("_trial_logging_actors", "_trial_queues", "_trial_logging_futures", "_logging_future_to_trial"):
                state[k] = {}
            return state

        def has_run(self, trial: Any) -> bool:
            """True while ``trial`` has a W&B run (a restarted trial continues it)."""
            return trial in self._trial_logging_actors

        def start_run(self, trial: Any, **wandb_init_kwargs: Any) -> None:
            """Start ``trial``'s W&B run: ``wandb.init(**wandb_init_kwargs)``, results logged but for the
            excluded keys and ``config``."""
            self._start_logging_actor(trial, self._exclude_results + ["config"], **wandb_init_kwargs)

        def wandb_key_file(self) -> str | None:
            """Hook: a file holding the W&B key, read by the logging actor on this node; ``None``: none."""
            return None

        def trial_summary(self, trial: Any, failed: bool) -> dict | None:
            """Hook: the run summary sent before ``trial``'s run ends; ``None``: no summary."""
            return None

        def _actor(self) -> Any:
            if getattr(self, "_runs_actor", None) is None:
                # max_restarts=0: a crashed logging actor ends the W&B runs, never the sweep.  No
                # runtime_env: the key travels as a file path (wandb_key_file), never as env_vars
                self._runs_actor = ray.remote(num_cpus=0, max_restarts=0, **_force_on_current_node())(
                    WandbRunsActor).remote(key_file=self.wandb_key_file())
                self._run_seq = 0
            return self._runs_actor

        def _start_logging_actor(self, trial: Any, exclude_results: list[str], **wandb_init_kwargs: Any) -> None:
            if trial in self._trial_logging_actors:
                return
            actor = self._actor()
            self._run_seq += 1
            key = f"{trial.trial_id}:{self._run_seq}"  # a restarted trial's new run is another key
            actor.start.remote(key, exclude_results, list(self.AUTO_CONFIG_KEYS), wandb_init_kwargs)
            # Ray's bookkeeping, kept so its cleanup and end-of-sweep wait work unchanged: the
            # trial's "queue" is its run key, its future (set when it ends) the run's finish
            self._trial_logging_actors[trial] = actor
            self._trial_queues[trial] = key

        def _send(self, trial: Any, result: dict) -> None:
            """Fire and forget: calls from this driver to the actor keep their order."""
            self._trial_logging_actors[trial].log.remote(self._trial_queues[trial], result)

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            if trial not in self._trial_logging_actors:
                self.log_trial_start(trial)
            if trial in self._trial_logging_actors:
                self._send(trial, _clean_log(result))

        def log_trial_save(self, trial: Any) -> None:
            """Checkpoints are not uploaded (a sweep keeps them in its run directory)."""

        def _signal_logging_actor_stop(self, trial: Any) -> None:
            if trial not in self._trial_logging_actors or trial in self._trial_logging_futures:
                return
            ref = self._trial_logging_actors[trial].finish.remote(self._trial_queues[trial])
            self._trial_logging_futures[trial] = ref
            self._logging_future_to_trial[ref] = trial

        def _cleanup_logging_actor(self, trial: Any) -> None:
            # Ray's kills the trial's actor; this one serves every trial, and stops at the sweep's end.
            # A finish that failed because the actor died: later trials get a new actor (the runs
            # open in the dead one are lost, said once here), not silence for the rest of the sweep
            ref, actor = self._trial_logging_futures.get(trial), self._trial_logging_actors.get(trial)
            if ref is not None:
                try:
                    ray.get(ref, timeout=0)
                except ray.exceptions.RayActorError as e:
                    if actor is not None and actor is getattr(self, "_runs_actor", None):
                        log.warning("the W&B logging actor died (%s); later trials log through a new one", e)
                        self._runs_actor = None
                except Exception:  # not finished (a timeout at the sweep's end) or a run's own error: logged there
                    pass
            self._trial_queues.pop(trial, None)
            self._trial_logging_futures.pop(trial, None)
            self._trial_logging_actors.pop(trial, None)

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            if trial in self._trial_logging_actors:
                summary = self.trial_summary(trial, failed)
                if summary is not None:
                    self._send(trial, {"__summary__": summary})
            super().log_trial_end(trial, failed)

        def _stop_actor(self) -> None:
            actor, self._runs_actor = getattr(self, "_runs_actor", None), None
            if actor is not None and ray.is_initialized():
                try:
                    ray.kill(actor)
                except Exception:  # gone with its node already
                    pass

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            """Ray's wait for every run's ``finish`` (bounded by its upload timeout), then the actor stops."""
            try:
                for trial in list(self._trial_logging_actors):  # runs whose trial never ended (an interrupted sweep)
                    if trial not in self._trial_logging_futures:
                        self._send(trial, {"__summary__": {"stop_reason": "interrupted"}})
                    self._signal_logging_actor_stop(trial)
                super().on_experiment_end(trials, **info)
            finally:
                self._stop_actor()

        def __del__(self) -> None:
            try:
                super().__del__()
            finally:
                self._stop_actor()

    for cls in (WandbRunsActor, DriverWandbCallback):
        cls.__qualname__ = cls.__name__
        globals()[cls.__name__] = cls
