"""Ray's ``WandbLoggerCallback`` adapted for sweeps (see :mod:`raysearch.search.tracking` for why
trials log from the driver).  A module of its own because importing Ray's W&B integration costs
~1 s and needs Ray: :func:`~raysearch.search.tracking.sweep_wandb_callback` imports it only when
a sweep tracks to W&B."""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import ray
from ray.air.integrations.wandb import (WANDB_ENV_VAR, WandbLoggerCallback, _clean_log, _QueueItem,
                                        _WandbLoggingActor)
from ray.air.util.node import _force_on_current_node

from raysearch.search.tracking import WandbSettings, used_config
from raysearch.train.methods import METHODS


def write_key_file(key: str) -> str:
    """``key`` in a 0600 file inside a fresh 0700 folder (``mkdtemp``): the logging actors read it
    on this node, so the key never enters a ``runtime_env`` (Ray's runtime-env agent logs every
    ``env_vars`` it creates, in clear, in a world-readable file) nor an actor's arguments."""
    path = os.path.join(tempfile.mkdtemp(prefix="raysearch-wandb-"), "key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return path


class _Actor(_WandbLoggingActor):
    """Ray's logging actor plus a summary item (stop reason, final metrics) and an exit code."""

    def __init__(self, *args: Any, key_file: str | None = None, **kwargs: Any) -> None:
        # the actor runs on the driver's node (_force_on_current_node), where the key file is; the
        # key goes into this process's environment only, which dies with the actor
        if key_file:
            os.environ[WANDB_ENV_VAR] = Path(key_file).read_text()
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


class SweepWandbCallback(WandbLoggerCallback):
    """One W&B run per trial, logged from the driver: see the module docstring."""

    _logger_actor_cls = _Actor
    _exclude_results = WandbLoggerCallback._exclude_results + [
        "final", "trial_id", "pid", "date", "timestamp", "hostname", "node_ip", "node_id", "node_host", "node_address",
        "done",
        "checkpoint_dir_name", "should_checkpoint", "time_since_restore", "iterations_since_restore"]

    def __init__(self, settings: WandbSettings, space: Any, stop_reason: Any) -> None:
        import wandb

        Path(settings.dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=settings.project, group=settings.group, entity=settings.entity,
                         dir=settings.dir, mode=settings.mode, resume="allow", job_type="trial",
                         settings=wandb.Settings(console="off", save_code=False, disable_git=True))
        self._space = space
        self._stop_reason = stop_reason  # (trial, failed) -> str, owned by the sweep
        self._key_file: str | None = None
        self._key_cleanup: Any = None

    def __getstate__(self) -> dict:
        # a copy (Tune pickles its callbacks with the tuner) neither owns nor removes the key file
        return {k: v for k, v in self.__dict__.items() if k not in ("_key_file", "_key_cleanup")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _key_file=None, _key_cleanup=None)

    def _remove_key_file(self) -> None:
        cleanup = getattr(self, "_key_cleanup", None)  # absent when __init__ failed
        if cleanup is not None:
            cleanup()  # idempotent; also runs at exit if the sweep never ends cleanly
            self._key_file = self._key_cleanup = None

    def setup(self, *args: Any, **kwargs: Any) -> None:
        # Ray's setup demands an API key unless WANDB_MODE says offline: without a key we are
        # offline (wandb_mode), so say it where Ray looks
        if self.kwargs.get("mode") in ("offline", "disabled"):
            os.environ["WANDB_MODE"] = self.kwargs["mode"]
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_logging_futures:  # a restarted trial continues its run
            return
        params = {k: v for k, v in trial.config.items() if k in self._space.names}
        run = self._space.apply(params, self._space.base)
        cfg = used_config(run)
        cfg["searched"] = sorted(params)
        w = run.train.weighting if METHODS.get(run.train.method).weighted else "none"
        # an experiment's units add their variant, fold, seed and label ratio (UnitGrid.wandb_tags)
        extra = list(getattr(self._space, "wandb_tags", lambda c: [])(trial.config))
        kwargs = dict(self.kwargs, id=f"{self.group}-{trial.trial_id}"[:128], name=str(trial),
                      group=self.group, project=self.project, config=cfg, allow_val_change=True,
                      tags=[run.train.method, f"weighting:{w}", w, *extra])
        self._start_logging_actor(trial, self._exclude_results + ["config"], **kwargs)

    def _start_logging_actor(self, trial: Any, exclude_results: list[str], **wandb_init_kwargs: Any) -> None:
        if not self._remote_logger_class:
            # Ray's options but max_restarts=0: Ray restarts its logging actor without limit although
            # the actor's constructor arguments live in the object store, and says so in an
            # error-level log line on every sweep (ray#53727).  A crashed logging actor ends that
            # trial's W&B run; the trial itself goes on.  No runtime_env: the key travels as a file
            # path (write_key_file), never as env_vars.
            self._remote_logger_class = ray.remote(num_cpus=0, **_force_on_current_node())(self._logger_actor_cls)
        if os.environ.get(WANDB_ENV_VAR) and self._key_file is None:
            self._key_file = write_key_file(os.environ[WANDB_ENV_VAR])
            self._key_cleanup = weakref.finalize(self, shutil.rmtree, os.path.dirname(self._key_file), True)
        super()._start_logging_actor(trial, exclude_results, key_file=self._key_file, **wandb_init_kwargs)

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
            last = dict(trial.last_result or {})
            summary = {k: last[k] for k in ("best_val_map", "test_map", "epochs_run", "train_time_s")
                       if isinstance(last.get(k), (int, float))}
            summary["stop_reason"] = self._stop_reason(trial, failed)
            self._send(trial, (_QueueItem.RESULT, {"__summary__": summary}))
        super().log_trial_end(trial, failed)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Ray's wait for the actors' ``wandb.finish``, then the key file goes: every actor read it
        in its constructor, and a resumed sweep writes a new one."""
        try:
            super().on_experiment_end(trials, **info)
        finally:
            self._remove_key_file()

    def __del__(self) -> None:
        try:
            super().__del__()
        finally:
            self._remove_key_file()
