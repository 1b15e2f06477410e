"""A live view of a running sweep (a Ray Tune ``Callback`` on the driver).

Why: between Ray's start-up and the final table a sweep showed nothing; Ray Tune's own reporter
prints a wide per-trial table that drowns on small terminals.  This shows one status line on
stderr (stdout stays clean for ``--json``): trials running / done / ASHA-stopped / failed /
restarted, best val mAP so far, elapsed and estimated remaining time.  Off a terminal it logs a
plain line every ``interval_s`` instead of redrawing.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

log = logging.getLogger(__name__)


def status_line(counts: dict[str, int], total: int, best: float, elapsed: float) -> str:
    done = counts["done"] + counts["stopped"] + counts["failed"]
    eta = "?" if done == 0 else f"{elapsed / done * max(0, total - done):.0f}s"
    best_s = "-" if not math.isfinite(best) else f"{best:.4f}"
    return (f"trials {done}/{total}: running {counts['running']}, done {counts['done']}, "
            f"asha-stopped {counts['stopped']}, failed {counts['failed']}, restarted {counts['restarted']} | "
            f"best val mAP {best_s} | {elapsed:.0f}s elapsed, ~{eta} left")


def sweep_progress(total: int, enabled: bool | None = None, interval_s: float = 10.0) -> Any:
    """The callback (built lazily: it subclasses Ray's ``Callback``)."""
    from ray.tune import Callback

    tty = sys.stderr.isatty() if enabled is None else enabled

    class SweepProgress(Callback):
        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.counts = {"running": 0, "done": 0, "stopped": 0, "failed": 0, "restarted": 0}
            self.best = -math.inf
            self.last_print = 0.0
            self._live = None

        def _show(self, force: bool = False) -> None:
            line = status_line(self.counts, total, self.best, time.perf_counter() - self.t0)
            if tty:
                if self._live is None:
                    from rich.console import Console
                    from rich.live import Live

                    self._live = Live(line, console=Console(stderr=True), transient=False, auto_refresh=False)
                    self._live.start()
                self._live.update(line, refresh=True)
            elif force or time.perf_counter() - self.last_print >= interval_s:
                self.last_print = time.perf_counter()
                log.info("%s", line)

        def on_trial_start(self, iteration, trials, trial, **info):
            self.counts["running"] = sum(t.status == "RUNNING" for t in trials) or 1
            self._show()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            v = result.get("best_val_map", result.get("val_map"))
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.best = max(self.best, float(v))
            self._show()

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            self.counts["done" if last.get("final") else "stopped"] += 1
            self.counts["running"] = max(0, self.counts["running"] - 1)
            self._show()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.counts["failed"] += 1
            self.counts["running"] = max(0, self.counts["running"] - 1)
            self._show()

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.counts["restarted"] += 1
            self._show()

        def on_experiment_end(self, trials, **info):
            self._show(force=True)
            if self._live is not None:
                self._live.stop()

    return SweepProgress()
