"""Choice registries (raysearch.choices): listed in --help, checked once in the configs, behaviour
read from the registered object; and `raysearch tune`'s options generated from SweepConfig's fields."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from raysearch import choices
from raysearch._cli.options import fill_choices
from raysearch.cli import app
from raysearch.config import CFConfig, ConfigError, SweepConfig, TrainConfig

runner = CliRunner()


def _params(command: str) -> list:
    return typer.main.get_command(app).commands[command].params


def _option(command: str, flag: str):
    return next(p for p in _params(command) if flag in p.opts)


# (registry, command, flag) for the choices that have a flag; (registry, config factory, key) for all
FLAGS = [(choices.SCHEDULERS, "tune", "--scheduler"), (choices.SEARCHERS, "tune", "--search"),
         (choices.RUNG_METRICS, "tune", "--rung-metric"),
         (choices.SHUFFLE_CONTROLS, "experiment", "--shuffle-control")]


def _experiment_config(v):
    from raysearch.experiment import ExperimentConfig

    return ExperimentConfig(shuffle_control=v)


CONFIGS = [
    (choices.SCHEDULERS, lambda v: SweepConfig(scheduler=v), "--scheduler"),
    (choices.SEARCHERS, lambda v: SweepConfig(search=v), "--search"),
    (choices.RUNG_METRICS, lambda v: SweepConfig(rung_metric=v), "--rung-metric"),
    (choices.CF_TRAINERS, lambda v: CFConfig(trainer=v), "cf.trainer"),
    (choices.TRUNKS, lambda v: TrainConfig(trunk=v), "train.trunk"),
    (choices.AUX_NORMS, lambda v: TrainConfig(aux_norm=v), "train.aux_norm"),
    (choices.SHUFFLE_CONTROLS, _experiment_config, "--shuffle-control"),
]


@pytest.mark.parametrize("registry, command, flag", FLAGS)
def test_help_lists_the_registry(registry, command, flag):
    text = fill_choices(_option(command, flag).help)
    assert " | ".join(registry.names()) in text, text
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0 and " | ".join(registry.names()) in r.output, r.output


@pytest.mark.parametrize("registry, make, what", CONFIGS)
def test_every_registered_name_is_accepted_and_an_unknown_one_is_one_line(registry, make, what):
    for name in registry.names():
        make(name)
    with pytest.raises(ConfigError) as e:
        make("nosuch")
    msg = str(e.value)
    assert msg == f"{what} 'nosuch' unknown; choose one of: {', '.join(registry.names())}", msg
    with pytest.raises(ConfigError):
        make(["a", "list"])  # unhashable: still one ConfigError, no TypeError


@pytest.fixture
def extra():
    """Registers entries on copies of the registries' contents; restores them afterwards."""
    saved = {r: dict(r._items) for r in (choices.SCHEDULERS, choices.SEARCHERS, choices.SHUFFLE_CONTROLS)}
    yield
    for r, items in saved.items():
        r._items.clear()
        r._items.update(items)


def test_a_registered_scheduler_and_searcher_are_accepted_and_used(extra, tmp_path):
    from raysearch.search.tune import _make_tuner

    built = {}
    choices.SCHEDULERS.register("mine", obj=choices.Scheduler(
        "mine", "test", lambda cfg, space, run_dir: built.setdefault("scheduler", ("mine", run_dir))))
    choices.SEARCHERS.register("grid", obj=choices.Searcher(
        "grid", "test", lambda cfg: built.setdefault("sampler", __import__("optuna").samplers.RandomSampler(cfg.seed))))
    cfg = SweepConfig(dataset="synthetic-tiny", scheduler="mine", search="grid", seed=4)
    assert "mine" in fill_choices(_option("tune", "--scheduler").help)
    from raysearch.search.tune import build_space

    space = build_space(cfg)
    # the Tuner receives what the entries built (no branch on their names)
    import ray.tune

    captured = {}
    real = ray.tune.Tuner

    class Spy:
        def __init__(self, trainable, tune_config, run_config):
            captured["tc"] = tune_config

    ray.tune.Tuner = Spy
    try:
        _make_tuner(cfg, space, lambda c: None, "n", str(tmp_path), [], 1, tmp_path)
    finally:
        ray.tune.Tuner = real
    assert captured["tc"].scheduler == ("mine", tmp_path)
    assert built["sampler"] is not None
    assert captured["tc"].search_alg._sampler is built["sampler"]


def test_a_registered_shuffle_control_picks_the_arms(extra):
    from raysearch.experiment.protocol import parse_variants

    choices.SHUFFLE_CONTROLS.register("last", obj=choices.ShuffleControl("last", "test", lambda b: list(b[-1:])))
    vs = parse_variants(["image_only", "mtl:uniform", "mtl:loss"], "last")
    assert [v.name for v in vs if v.shuffled_from] == ["mtl:loss+shuffled-cf"]
    assert not [v for v in parse_variants(["image_only", "mtl:loss"], "none") if v.shuffled_from]


def test_config_imports_neither_torch_nor_ray():
    code = "import sys, raysearch.config; print([m for m in ('torch', 'ray', 'optuna') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------- options declared once

_NOT_CONFIG = {"top", "json_out"}


def test_every_sweep_field_is_one_tune_option_with_its_default_and_help():
    params = {p.name: p for p in _params("tune")}
    cli_fields = [f for f in dataclasses.fields(SweepConfig) if "help" in f.metadata]
    api_only = {f.name for f in dataclasses.fields(SweepConfig)} - {f.name for f in cli_fields}
    assert api_only == {"time_budget_s", "seed_defaults", "prefetch_cf", "train_poll_s"}
    seen = set()
    for f in cli_fields:
        meta = f.metadata
        name = meta["flags"][0].lstrip("-").replace("-", "_") if meta["invert"] else f.name
        p = params[name]
        seen.add(name)
        assert p.default == ((not f.default) if meta["invert"] else f.default), f.name
        assert p.help == meta["help"], f.name
        flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
        assert tuple(p.opts) == flags or set(p.opts) == set(flags), (f.name, p.opts)
    # and the reverse: every option of tune is a field, but the output ones
    assert set(params) - seen == _NOT_CONFIG


def test_tune_options_reach_the_sweep_config(monkeypatch):
    import raysearch.search.tune as tune_mod

    got = {}

    def fake_run(cfg, space=None, **kw):
        got["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(tune_mod, "run_sweep", fake_run)
    monkeypatch.setattr(tune_mod, "build_space", lambda cfg: None)
    r = runner.invoke(app, ["tune", "--dataset", "synthetic-tiny", "-n", "3", "--scheduler", "none", "--search",
                            "random", "--no-wandb", "--checkpoint-every", "2", "--checkpoint-overhead", "0",
                            "--checkpoint-mtbf", "60", "--torch-trainer", "--seed", "5"])
    assert r.exit_code == 0, r.output
    cfg = got["cfg"]
    want = SweepConfig(dataset="synthetic-tiny", trials=3, scheduler="none", search="random", wandb=False,
                       checkpoint_every=2, checkpoint_overhead=0.0, checkpoint_mtbf=60.0, torch_trainer=True, seed=5)
    assert cfg == want
    r = runner.invoke(app, ["tune", "--scheduler", "fifo"])
    assert r.exit_code == 2 and re.search(r"--scheduler 'fifo' unknown; choose one of: asha, none", r.output), r.output


def test_trial_context_reads_the_sweep_config():
    from raysearch.search.trainables import TRIAL_FIELDS, TrialContext, trial_settings

    cfg = SweepConfig(cpus_per_trial=2.0, checkpoint_every=3, checkpoint_overhead=0.0, train_poll_s=0.5,
                      workers_per_trial=2)
    ctx = TrialContext(space=None, base=None, shared_actor="a", settings=cfg)
    assert {k: getattr(ctx, k) for k in TRIAL_FIELDS} == {k: getattr(cfg, k) for k in TRIAL_FIELDS}
    assert ctx.distributed
    with pytest.raises(AttributeError):
        ctx.wandb_project  # only the settings a trial reads
    import pickle

    assert pickle.loads(pickle.dumps(ctx)) == ctx
    from raysearch.experiment import ExperimentConfig

    e = ExperimentConfig(cpus_per_trial=3.0, checkpoint_every=0, max_failures=1)
    s = trial_settings(e)
    assert (s.cpus_per_trial, s.checkpoint_every, s.max_failures, s.checkpoint_overhead) == (3.0, 0, 1, 0.05)
    assert s.checkpoint_mtbf == 600.0  # an experiment's units space their saves like a sweep's trials
