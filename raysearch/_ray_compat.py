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

_WANDB_NAMES = ("WandbSummaryActor", "DriverWandbCallback")
_wandb_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name in _WANDB_NAMES:
        with _wandb_lock:
            if name not in globals():
                _define_wandb_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_wandb_classes() -> None:
    """Subclasses of Ray's private ``_WandbLoggingActor`` and of ``WandbLoggerCallback`` overriding
    its private ``_start_logging_actor`` / ``_signal_logging_actor_stop`` hooks and using its
    private queue items (``_QueueItem``), log cleaner (``_clean_log``) and actor placement
    (``_force_on_current_node``).  Published as module globals under plain names, so pickle (Tune's
    callbacks, Ray's actor class) finds them by reference."""
    import ray
    from ray.air.integrations.wandb import (WANDB_ENV_VAR, WandbLoggerCallback, _clean_log, _QueueItem,
                                            _WandbLoggingActor)
    from ray.air.util.node import _force_on_current_node

    class WandbSummaryActor(_WandbLoggingActor):
        """Ray's logging actor plus a summary item (stop reason, final metrics) and an exit code;
        the W&B key comes from a file on this node (``key_file``), never from ``runtime_env``."""

        def __init__(self, *args: Any, key_file: str | None = None, **kwargs: Any) -> None:
            # the actor runs on the driver's node (_force_on_current_node), where the key file is; the
            # key goes into this process's environment only, which dies with the actor
            if key_file:
                with open(key_file) as f:
                    os.environ[WANDB_ENV_VAR] = f.read()
            super().__init__(*args, **kwargs)

        def run(self):
            os.environ["WANDB_START_METHOD"] = "thread"
            run = self._wandb.init(*self.args, **self.kwargs)
            exit_code = 0
            while True:
                item_type, item = self.queue.get()
                if item_type == _QueueItem.END:
                    break
                if item_type == _QueueItem.RESULT and isinstance(item, dict) and "__summary__" in item:
                    summary = dict(item["__summary__"])
                    exit_code = 1 if summary.get("stop_reason") == "error" else 0
                    for k, v in summary.items():
                        run.summary[k] = v
                    continue
                if item_type == _QueueItem.CHECKPOINT:
                    continue
                log_, config_update = self._handle_result(item)
                self._wandb.config.update(config_update, allow_val_change=True)
                self._wandb.log(log_, step=int(log_["epoch"]) if "epoch" in log_ else None)
            self._wandb.finish(exit_code=exit_code)

    class DriverWandbCallback(WandbLoggerCallback):
        """Ray's ``WandbLoggerCallback`` logging through :class:`WandbSummaryActor`: actors never
        restarted, the key handed over as a file, queue items sent without waiting, and a summary
        item before a run ends.  Subclasses use only the public hooks below (``has_run``,
        ``start_run``, ``EXTRA_EXCLUDED_RESULTS``, ``wandb_key_file``, ``trial_summary``)."""

        _logger_actor_cls = WandbSummaryActor
        #: result keys never logged, on top of Ray's own (its private ``_exclude_results``)
        EXTRA_EXCLUDED_RESULTS: tuple[str, ...] = ()

        def __init_subclass__(cls, **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            cls._exclude_results = WandbLoggerCallback._exclude_results + list(cls.EXTRA_EXCLUDED_RESULTS)

        def has_run(self, trial: Any) -> bool:
            """True when ``trial`` has its logging actor already (a restarted trial continues its run)."""
            return trial in self._trial_logging_futures

        def start_run(self, trial: Any, **wandb_init_kwargs: Any) -> None:
            """Start ``trial``'s logging actor: ``wandb.init(**wandb_init_kwargs)``, results logged but
            for the excluded keys and ``config``."""
            self._start_logging_actor(trial, self._exclude_results + ["config"], **wandb_init_kwargs)

        def wandb_key_file(self) -> str | None:
            """Hook: a file holding the W&B key, read by the logging actors on this node; ``None``: none."""
            return None

        def trial_summary(self, trial: Any, failed: bool) -> dict | None:
            """Hook: the run summary sent before ``trial``'s run ends; ``None``: no summary."""
            return None

        def _start_logging_actor(self, trial: Any, exclude_results: list[str], **wandb_init_kwargs: Any) -> None:
            if not self._remote_logger_class:
                # Ray's options but max_restarts=0: Ray restarts its logging actor without limit although
                # the actor's constructor arguments live in the object store, and says so in an
                # error-level log line on every sweep (ray#53727).  A crashed logging actor ends that
                # trial's W&B run; the trial itself goes on.  No runtime_env: the key travels as a file
                # path (wandb_key_file), never as env_vars.
                self._remote_logger_class = ray.remote(num_cpus=0, **_force_on_current_node())(self._logger_actor_cls)
            super()._start_logging_actor(trial, exclude_results, key_file=self.wandb_key_file(), **wandb_init_kwargs)

        def _send(self, trial: Any, item: Any) -> None:
            """Queue an item without waiting: Ray's ``Queue.put`` blocks the driver (every trial of the
            sweep) until the trial's new queue actor has started; calls from one caller to one actor
            keep their order, so fire-and-forget is safe."""
            self._trial_queues[trial].actor.put.remote(item)

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            if trial not in self._trial_logging_actors:
                self.log_trial_start(trial)
            self._send(trial, (_QueueItem.RESULT, _clean_log(result)))

        def _signal_logging_actor_stop(self, trial: Any) -> None:
            self._send(trial, (_QueueItem.END, None))

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            if trial in self._trial_queues:
                summary = self.trial_summary(trial, failed)
                if summary is not None:
                    self._send(trial, (_QueueItem.RESULT, {"__summary__": summary}))
            super().log_trial_end(trial, failed)

    for cls in (WandbSummaryActor, DriverWandbCallback):
        cls.__qualname__ = cls.__name__
        globals()[cls.__name__] = cls
