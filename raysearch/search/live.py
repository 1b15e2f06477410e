"""A live view of a running sweep (a Ray Tune ``Callback`` on the driver).

Why: between Ray's start-up and the final table a sweep showed nothing; Ray Tune's own reporter
prints a wide per-trial table that drowns on small terminals.  This shows one status line on
stderr (stdout stays clean for ``--json``): trials running / done / ASHA-stopped / failed /
restarted, best val mAP so far, elapsed and estimated remaining time.

On a terminal the line is redrawn in place.  Off a terminal (CI logs, ``nohup``, a pipe) it is
printed as a plain, timestamped line every ``interval_s`` seconds (``--status-every``): it used to
go to ``log.info``, which nothing shows, so a 12-minute sweep printed no status at all.  The
timer is checked on every step of Tune's loop, not only on trial events, so a sweep of long
epochs still prints on time.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

#: seconds between plain status lines off a terminal (``raysearch tune --status-every``)
STATUS_EVERY_S = 60.0
_REDRAW_S = 1.0  # on a terminal: redraw at most this often between trial events (elapsed time moves)


def status_line(counts: dict[str, int], total: int, best: float, elapsed: float) -> str:
    done = counts["done"] + counts["stopped"] + counts["failed"]
    eta = "?" if done == 0 else f"{elapsed / done * max(0, total - done):.0f}s"
    best_s = "-" if not math.isfinite(best) else f"{best:.4f}"
    return (f"trials {done}/{total}: running {counts['running']}, done {counts['done']}, "
            f"asha-stopped {counts['stopped']}, failed {counts['failed']}, restarted {counts['restarted']} | "
            f"best val mAP {best_s} | {elapsed:.0f}s elapsed, ~{eta} left")


def sweep_progress(total: int, enabled: bool | None = None, interval_s: float = STATUS_EVERY_S,
                   stream: TextIO | None = None) -> Any:
    """The callback (built lazily: it subclasses Ray's ``Callback``).

    ``enabled``: redraw one line in place (True), print plain lines every ``interval_s`` (False),
    or decide by whether ``stream`` (default: stderr) is a terminal (None).  ``interval_s`` 0:
    no plain lines at all.
    """
    from ray.tune import Callback

    def out() -> TextIO:  # looked up when written: a test or CliRunner may swap sys.stderr
        return stream if stream is not None else sys.stderr

    if enabled is None:
        isatty = getattr(out(), "isatty", None)
        tty = bool(isatty()) if callable(isatty) else False
    else:
        tty = enabled

    class SweepProgress(Callback):
        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.counts = {"running": 0, "done": 0, "stopped": 0, "failed": 0, "restarted": 0}
            self.best = -math.inf
            self.last_print = -math.inf
            self.lines = 0  # plain lines printed
            self._based = False
            self._live = None

        def _show(self, force: bool = False, event: bool = True) -> None:
            now = time.perf_counter()
            if tty:
                if not event and not force and now - self.last_print < _REDRAW_S:
                    return
                self.last_print = now
                line = status_line(self.counts, total, self.best, now - self.t0)
                if self._live is None:
                    from rich.console import Console
                    from rich.live import Live

                    console = Console(file=stream) if stream is not None else Console(stderr=True)
                    self._live = Live(line, console=console, transient=False, auto_refresh=False)
                    self._live.start()
                self._live.update(line, refresh=True)
            elif interval_s > 0 and (force or now - self.last_print >= interval_s):
                self.last_print = now
                line = status_line(self.counts, total, self.best, now - self.t0)
                print(f"[{time.strftime('%H:%M:%S')}] sweep status: {line}", file=out(), flush=True)
                self.lines += 1

        def _best(self, result: dict[str, Any]) -> None:
            v = result.get("best_val_map", result.get("val_map"))
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.best = max(self.best, float(v))

        def _running(self, trials: list[Any]) -> None:
            if not self._based:  # a resumed sweep: trials that ended before count from the start
                self._based = True
                for t in trials:
                    self._best(t.last_result or {})  # and their best val mAP (not "-" on a resumed sweep)
                    status = getattr(t, "status", None)
                    if status == "ERROR":
                        self.counts["failed"] += 1
                    elif status == "TERMINATED":
                        self.counts["done" if (t.last_result or {}).get("final") else "stopped"] += 1
            self.counts["running"] = sum(getattr(t, "status", None) == "RUNNING" for t in trials)

        def on_step_end(self, iteration, trials, **info):
            self._running(trials)
            self._show(event=False)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._running(trials)
            self.counts["running"] = max(1, self.counts["running"])
            self._show()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._best(result)
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
            self._running(trials)
            self._show(force=True)
            if self._live is not None:
                self._live.stop()

    return SweepProgress()
