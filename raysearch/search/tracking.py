"""Weights & Biases logging for sweep trials.

One W&B run per trial, grouped by sweep name and tagged with method + weighting scheme, so the W&B
UI compares weighting schemes directly (group by tag).  Without ``WANDB_API_KEY`` (or with
``WANDB_MODE=offline``) runs are written offline under ``<run dir>/wandb`` and need no network;
``wandb sync <run dir>/wandb/offline-run-*`` uploads them later.

Sweeps log from the driver through Ray's ``WandbLoggerCallback`` (:class:`SweepWandbCallback`),
not from inside trials: trials run on any node (their offline files would stay there), DDP
workers keep running for a moment after ASHA stops them (a run they own would say "completed"),
and a trial restarted after a node loss must continue its run, not open a second one.  The
callback's one logging actor (every run of the sweep in one process: Ray's default of a process
pair per trial cost an experiment's short units ~70% more time) lives on the driver's node and sees
exactly what Tune saw; it reads ``WANDB_API_KEY`` there from a private file, never from a
``runtime_env`` (Ray logs those in clear).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from raysearch.config import RunConfig, to_dict

log = logging.getLogger(__name__)


def wandb_mode() -> str:
    """``online`` only with an API key and no explicit offline/disabled mode: never a surprise upload."""
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("offline", "disabled", "dryrun"):
        return "disabled" if env == "disabled" else "offline"
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


@dataclass(frozen=True)
class WandbSettings:
    """What every trial needs to open its W&B run (small and picklable: travels to trial actors)."""

    enabled: bool = True
    project: str = "raysearch"
    group: str = "sweep"          # = sweep name
    dir: str = "."                # local folder holding wandb/ (the run directory)
    mode: str = "offline"
    entity: str | None = None


#: CF options each Cornac model reads (others are left out of its logged config)
CF_OPTIONS = {
    "vaecf": {"model", "dim", "hidden", "epochs", "lr", "beta", "batch_size", "bias", "seed"},
    "bivaecf": {"model", "dim", "hidden", "epochs", "lr", "beta", "batch_size", "seed"},
    "bpr": {"model", "dim", "epochs", "lr", "reg", "seed"},
    "gmf": {"model", "dim", "epochs", "lr", "batch_size", "reg", "seed"},
    "wmf": {"model", "dim", "epochs", "lr", "batch_size", "reg", "seed"},
}


def used_config(run: RunConfig) -> dict[str, Any]:
    """``flat_config`` without the options this run never reads (Omega under uniform weighting,
    VAE options for BPR, every CF option for image_only): W&B filters would otherwise group
    trials by values that had no effect."""
    from raysearch.train.methods import METHODS

    method = METHODS.get(run.train.method)
    drop = {f"train.{k}" for n in METHODS for k in METHODS.get(n).reads} - {f"train.{k}" for k in method.reads}
    if run.train.weighting == "uniform":
        drop.add("train.omega")
    keep_cf = CF_OPTIONS.get(run.cf.model) if method.uses_cf else set()
    out = {}
    for k, v in flat_config(run).items():
        if k in drop or (k.startswith("cf.") and keep_cf is not None and k[3:] not in keep_cf):
            continue
        out[k] = v
    return out


def flat_config(run: RunConfig) -> dict[str, Any]:
    """``{"train.alpha": 1.5, ...}``: flat keys are what W&B panels group and filter on."""
    out: dict[str, Any] = {}
    for section, values in to_dict(run).items():
        if isinstance(values, dict):
            for k, v in values.items():
                out[f"{section}.{k}"] = v
        else:
            out[section] = values
    return out


class TrialTracker:
    """Wraps one W&B run; a no-op object when tracking is disabled so trial code has no branches."""

    def __init__(self, settings: WandbSettings, run: RunConfig, trial_name: str, trial_id: str,
                 params: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.run = None
        if not settings.enabled or settings.mode == "disabled":
            return
        import wandb

        Path(settings.dir).mkdir(parents=True, exist_ok=True)
        cfg = flat_config(run)
        cfg["searched"] = sorted((params or {}).keys())
        self.run = wandb.init(
            project=settings.project, entity=settings.entity, group=settings.group,
            name=trial_name, id=f"{settings.group}-{trial_id}"[:128], resume="allow",
            job_type="trial", tags=[run.train.method, f"weighting:{run.train.weighting}", run.train.weighting],
            config=cfg, dir=settings.dir, mode=settings.mode, reinit="finish_previous",
            settings=wandb.Settings(console="off", save_code=False, disable_git=True),
        )

    @property
    def run_dir(self) -> str | None:
        return None if self.run is None else self.run.dir

    def log_epoch(self, metrics: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        clean = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        step = int(metrics["epoch"]) if "epoch" in metrics else None
        self.run.log(clean, step=step)

    def finish(self, summary: Mapping[str, Any], stop_reason: str) -> None:
        if self.run is None:
            return
        for k, v in summary.items():
            self.run.summary[k] = v
        self.run.summary["stop_reason"] = stop_reason
        self.run.finish(exit_code=1 if stop_reason == "error" else 0)
        self.run = None


def offline_runs(run_dir: str | Path) -> list[Path]:
    """Offline run folders written by a sweep (what ``wandb sync`` takes)."""
    return sorted((Path(run_dir) / "wandb").glob("offline-run-*"))


def sweep_wandb_callback(settings: WandbSettings, space: Any, stop_reason: Any) -> Any:
    """The driver-side W&B callback for a sweep, or None when tracking is off."""
    if not settings.enabled or settings.mode == "disabled":
        return None
    from raysearch.search._wandb_callback import SweepWandbCallback

    return SweepWandbCallback(settings, space, stop_reason)
