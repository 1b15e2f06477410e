"""Issue 13's cheaper-trial pieces of the sweep engine, without Ray: the checkpoint cadence by
cost, TPE's seeded first point and the CF models the data owner prefetches."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from raysearch.search.shared import cf_key, prefetch_runs
from raysearch.search.space import load_space
from raysearch.search.trainables import EpochReporter
from raysearch.search.tune import default_point

SPACE = {
    "base": {"train": {"method": "mtl", "alpha": 1.5, "lr": 1e-3, "weighting": "loss", "omega": 3.0},
             "cf": {"model": "vaecf", "dim": 32, "beta": 1.0}},
    "params": {
        "train.weighting": {"type": "categorical", "choices": ["uniform", "interaction", "loss"]},
        "train.alpha": {"type": "float", "low": 0.0, "high": 5.0},
        "train.omega": {"type": "float", "low": 1.0, "high": 10.0, "when": {"train.weighting": ["interaction", "loss"]}},
        "train.lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
        "cf.model": {"type": "categorical", "choices": ["vaecf", "bpr"]},
        "cf.dim": {"type": "categorical", "choices": [16, 32]},
        "cf.beta": {"type": "categorical", "choices": [0.5, 1.0], "when": {"cf.model": ["vaecf"]}},
    },
}


def _space(tmp_path: Path, data: dict | None = None):
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(data or SPACE, sort_keys=False))
    return load_space(p).with_base(dataset="synthetic-tiny", data_root=None)


def test_default_point_is_the_base_config_inside_the_domain(tmp_path):
    point = default_point(_space(tmp_path))
    assert point == {"train.weighting": "loss", "train.alpha": 1.5, "train.omega": 3.0, "train.lr": 1e-3,
                     "cf.model": "vaecf", "cf.dim": 32, "cf.beta": 1.0}
    data = copy.deepcopy(SPACE)
    data["base"]["train"].update(weighting="uniform", lr=0.5)  # omega inactive, lr outside [low, high]
    point = default_point(_space(tmp_path, data))
    assert "train.omega" not in point and "train.lr" not in point and point["train.weighting"] == "uniform"


def test_prefetch_runs_one_per_cf_model_base_first(tmp_path):
    space = _space(tmp_path)
    runs = prefetch_runs(space)
    cfs = [(r["cf"]["model"], r["cf"]["dim"], r["cf"]["beta"]) for r in runs]
    assert cfs[0] == ("vaecf", 32, 1.0)
    # vaecf x dim x beta + bpr x dim (beta is inactive for bpr: the base value, not a 5th/6th model)
    assert sorted(cfs) == sorted([("vaecf", d, b) for d in (16, 32) for b in (0.5, 1.0)] + [("bpr", 16, 1.0), ("bpr", 32, 1.0)])
    assert prefetch_runs(space, limit=3) == []  # too many models: nothing prefetched
    data = copy.deepcopy(SPACE)
    data["params"]["cf.beta"] = {"type": "float", "low": 0.1, "high": 1.0}
    assert prefetch_runs(_space(tmp_path, data)) == []  # a continuous CF parameter: unbounded
    assert cf_key(space.base) == cf_key(space.apply({"train.alpha": 0.3}))  # training params share the model
    # a base CF value the space never samples (dim 8 of choices 16/32) is never asked for: not prefetched
    data = copy.deepcopy(SPACE)
    data["base"]["cf"]["dim"] = 8
    runs8 = prefetch_runs(_space(tmp_path, data))
    assert len(runs8) == 6 and 8 not in {r["cf"]["dim"] for r in runs8}


@pytest.fixture(autouse=True)
def _fresh_process_cost(monkeypatch):
    """Each test starts like a fresh trial process: no checkpoint cost measured yet."""
    monkeypatch.setattr(EpochReporter, "process_cost", 0.0)


def test_checkpoint_cadence_bounded_by_its_cost():
    calls = []
    state = {"epoch": 0}

    def report(metrics, checkpoint=None):
        calls.append(checkpoint is not None)

    def epoch(i, seconds):
        rep({"epoch": i, "epoch_time_s": seconds, "val_map": 0.5, "_state": lambda: state})

    rep = EpochReporter(report, lambda d: object(), every=1, max_t=0, write_state=True, extra={}, overhead=0.1)
    rep.last_cost = 1.0  # as if a checkpoint had cost 1 s: the next one waits for 10 s of training
    rep.since = 0.0
    for i in range(1, 6):
        epoch(i, 3.0)
    # 10 s reached at epoch 4; that checkpoint cost ~0 s, so epoch 5 checkpoints again
    assert calls == [False, False, False, True, True]
    every = EpochReporter(report, lambda d: object(), every=1, max_t=0, write_state=True, extra={}, overhead=0.0)
    calls.clear()
    every.last_cost = 1.0
    for i in range(1, 4):
        every({"epoch": i, "epoch_time_s": 0.1, "val_map": 0.5, "_state": lambda: state})
    assert calls == [True, True, True]  # overhead 0: every due epoch, as before
    calls.clear()
    every({"epoch": 4, "epoch_time_s": 0.1, "val_map": 0.5, "_state": lambda: state, "_last": True})
    assert calls == [False]  # the schedule's last epoch: the final report (with the model) follows at once


def test_checkpoint_spacing_is_at_least_youngs_interval():
    """With a node failing every ``mtbf`` seconds, saving more often than sqrt(2 * cost * mtbf)
    seconds of training costs more than the work it protects: a cheap save on short epochs waits
    for that, not for the overhead budget's cost / overhead; a real epoch still saves each time."""
    import math

    calls = []
    state = {"epoch": 0}

    def report(metrics, checkpoint=None):
        calls.append(checkpoint is not None)

    rep = EpochReporter(report, lambda d: object(), every=1, max_t=0, write_state=True, extra={}, overhead=0.05,
                        mtbf=600.0)
    rep.last_cost = 0.01  # a 10 ms save: the budget alone would save every 0.2 s of training
    assert rep.spacing_s() == pytest.approx(math.sqrt(2 * 0.01 * 600))  # ~3.46 s
    for i in range(1, 51):  # 50 epochs of 0.1 s
        rep({"epoch": i, "epoch_time_s": 0.1, "val_map": 0.5, "_state": lambda: state})
        rep.last_cost = 0.01  # the test's saves cost ~0 s; keep the cost the spacing is about
    # the first save once 3.5 s of training have passed (epoch 35), not at epoch 2
    assert calls.index(True) == 34 and sum(calls) == 1, calls
    budget_only = EpochReporter(report, lambda d: object(), every=1, max_t=0, write_state=True, extra={},
                                overhead=0.05, mtbf=0.0)
    budget_only.last_cost = 0.01
    assert budget_only.spacing_s() == pytest.approx(0.2)
    slow = EpochReporter(report, lambda d: object(), every=1, max_t=0, write_state=True, extra={}, overhead=0.05,
                         mtbf=600.0)
    slow.last_cost = 1.0  # a 1 s save of a big model: ~35 s, so 60 s epochs save every epoch
    assert slow.spacing_s() == pytest.approx(math.sqrt(1200)) and slow.spacing_s() < 60
    off = EpochReporter(report, lambda d: object(), every=1, max_t=0, write_state=True, extra={}, overhead=0.0,
                        mtbf=600.0)
    off.last_cost = 1.0
    assert off.spacing_s() == 0.0  # --checkpoint-overhead 0: every due epoch saves, whatever the MTBF


def test_checkpoint_cost_carries_over_to_the_next_trial_in_the_process():
    """A reused trial actor's next trial starts from the cost measured last, so its first due
    epoch is spaced like the rest instead of saving at once."""
    import time

    calls = []

    def report(metrics, checkpoint=None):
        calls.append(checkpoint is not None)

    def slow_checkpoint(d):
        time.sleep(0.2)  # a save that costs >= 0.2 s
        return object()

    first = EpochReporter(report, slow_checkpoint, every=1, max_t=0, write_state=True, extra={}, overhead=0.1)
    first({"epoch": 1, "epoch_time_s": 1.0, "val_map": 0.5, "_state": dict})
    assert calls == [True]  # a fresh process: nothing known, the first due epoch saves
    cost = EpochReporter.process_cost
    assert cost >= 0.2
    calls.clear()
    second = EpochReporter(report, lambda d: object(), every=1, max_t=0, write_state=True, extra={}, overhead=0.1)
    n = next(i for i in range(1, 10_000) if (i * 0.5) * 0.1 >= cost)  # 0.5 s epochs until cost / overhead
    assert n > 1
    for i in range(1, n + 1):
        second({"epoch": i, "epoch_time_s": 0.5, "val_map": 0.5, "_state": dict})
    assert calls == [False] * (n - 1) + [True], (cost, calls)


def test_a_trial_asks_for_its_data_before_the_heavy_imports():
    """What a trial process (or a Ray Train worker) imports before its data request leaves: the
    trainable and the request path only, not the sweep driver (pandas results, the Tuner code) or
    the dataset readers (scipy); those load while the data owner works."""
    import subprocess
    import sys

    code = ("import sys, raysearch.search.trainables as t; t.get_training_data; "
            "print(sorted(m for m in ('raysearch.search.tune', 'raysearch.search.results', 'raysearch.data', "
            "'raysearch.train.data', 'scipy', 'torch', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    # the flat API still resolves (lazily)
    import raysearch.search as s

    assert s.run_sweep.__module__ == "raysearch.search.tune" and "SweepConfig" in dir(s)
