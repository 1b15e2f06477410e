"""Ray's ``WandbLoggerCallback`` adapted for sweeps (see :mod:`raysearch.search.tracking` for why
trials log from the driver).  A module of its own because importing Ray's W&B integration costs
~1 s and needs Ray: :func:`~raysearch.search.tracking.sweep_wandb_callback` imports it only when
a sweep tracks to W&B.  What touches Ray's private W&B internals (the logging actor, the callback's
hooks) is :class:`raysearch._ray_compat.DriverWandbCallback`; this module is the sweep's part."""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from ray.air.integrations.wandb import WANDB_ENV_VAR

from raysearch._ray_compat import DriverWandbCallback, WandbRunsActor
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


#: the sweep's logging actor: every trial's W&B run in one process, the key read from a file
_Actor = WandbRunsActor


class SweepWandbCallback(DriverWandbCallback):
    """One W&B run per trial, logged from the driver: see the module docstring."""

    EXTRA_EXCLUDED_RESULTS = (
        "final", "trial_id", "pid", "date", "timestamp", "reported_at", "hostname", "node_ip", "node_id", "node_host",
        "node_address", "done",
        "checkpoint_dir_name", "should_checkpoint", "time_since_restore", "iterations_since_restore")

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
        return {k: v for k, v in super().__getstate__().items() if k not in ("_key_file", "_key_cleanup")}

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
        if self.has_run(trial):  # a restarted trial continues its run
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
        self.start_run(trial, **kwargs)

    def wandb_key_file(self) -> str | None:
        """The key (``WANDB_API_KEY``) in a private file, written once per sweep, for the logging actors."""
        if os.environ.get(WANDB_ENV_VAR) and self._key_file is None:
            self._key_file = write_key_file(os.environ[WANDB_ENV_VAR])
            self._key_cleanup = weakref.finalize(self, shutil.rmtree, os.path.dirname(self._key_file), True)
        return self._key_file

    def trial_summary(self, trial: Any, failed: bool) -> dict:
        last = dict(trial.last_result or {})
        summary = {k: last[k] for k in ("best_val_map", "test_map", "epochs_run", "train_time_s")
                   if isinstance(last.get(k), (int, float))}
        summary["stop_reason"] = self._stop_reason(trial, failed)
        return summary

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The wait for every run's ``wandb.finish``, then the key file goes: the logging actor read it
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
