"""CLI options: ``--set section.key=value``, shared option declarations, help choices from the registries."""
from __future__ import annotations

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from raysearch._cli.options import fill_choices
from raysearch._cli.train import build_run_config
from raysearch.cli import app
from raysearch.config import ConfigError, RunConfig, dump_run_config, load_run_config

runner = CliRunner()


def _commands() -> dict:
    return typer.main.get_command(app).commands


def _option(command: str, flag: str):
    return next(p for p in _commands()[command].params if flag in p.opts)


def test_set_precedence_config_then_flags_then_set(tmp_path):
    cfg = tmp_path / "best.yaml"
    dump_run_config(RunConfig(), cfg)
    cfg.write_text(cfg.read_text().replace("weight_decay: 0.0001", "weight_decay: 0.3"))
    run = build_run_config(str(cfg), {"train": {"lr": 0.01, "alpha": 0.7}}, [
        "train.lr=0.02", "train.cf_standardize=false", "cf.model=bpr", "train.weight_decay=1e-4",
        "cf.hidden=[10, 5]", "train.aux_epochs=null", "split.label_ratio=0.5"])
    t = run.train
    assert (t.lr, t.alpha, t.weight_decay, t.cf_standardize, t.aux_epochs) == (0.02, 0.7, 1e-4, False, None)
    assert (run.cf.model, run.cf.hidden, run.split.label_ratio) == ("bpr", (10, 5), 0.5)
    assert build_run_config(str(cfg), {}, []).train.weight_decay == 0.3  # the file alone
    later = build_run_config(None, {}, ["train.seed=1", "train.seed=2"])
    assert later.train.seed == 2  # repeated: the last one wins


@pytest.mark.parametrize("item, message", [
    ("train.weight_decay", "--set 'train.weight_decay': expected SECTION.KEY=VALUE"),
    ("weight_decay=1", "--set 'weight_decay=1': expected SECTION.KEY=VALUE"),
    ("train.=1", "expected SECTION.KEY=VALUE"),
    ("model.dim=3", "--set model.dim=3: unknown section 'model'; choose one of split, cf, train"),
    ("train.wd=1", "--set train.wd=1: unknown key train.wd; valid keys: alpha,"),
    ("train.weight_decay=abc", "key 'weight_decay' expects float, got 'abc'"),
    ("train.weight_decay=-1", "train.weight_decay and train.tau must be >= 0"),
    ("cf.dim=[1,", "--set cf.dim=[1,: value '[1,' is not a YAML scalar or list"),
])
def test_set_errors_name_the_item(item, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_run_config(None, {}, [item])


@pytest.mark.parametrize("item, message", [
    ("train.momentum", "--set 'train.momentum': expected SECTION.KEY=VALUE"),
    ("train.nosuch=1", "unknown key train.nosuch"),
    ("train.epochs=two", "key 'epochs' expects int, got 'two'"),
])
def test_cli_set_errors_are_one_line(item, message):
    r = runner.invoke(app, ["train", "--dataset", "synthetic-tiny", "--set", item])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.timeout(300)
def test_cli_set_reaches_the_run_config(tmp_path):
    out = tmp_path / "model"
    r = runner.invoke(app, [
        "train", "--dataset", "synthetic-tiny", "--method", "image_only", "--backbone", "tiny_cnn",
        "--weights", "none", "--image-size", "16", "--epochs", "1", "--lr", "0.01", "--set", "train.lr=0.002",
        "--set", "train.weight_decay=0.5", "--set", "train.optimizer=sgd", "--set", "train.momentum=0.8",
        "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["epochs_run"] == 1  # stdout: the JSON document alone
    t = load_run_config(out / "config.yaml").train
    assert (t.lr, t.weight_decay, t.optimizer, t.momentum) == (0.002, 0.5, "sgd", 0.8)


def _listed(text: str) -> list[str]:
    """The ``a | b | c`` run of names in a help text."""
    m = re.search(r"[\w-]+(?: \| [\w-]+)+", text)
    assert m, text
    return m.group(0).split(" | ")


def test_help_choices_are_the_registry_names():
    from raysearch.cf import CF_MODELS, WEIGHTINGS
    from raysearch.data import DATASETS
    from raysearch.model.backbones import BACKBONES
    from raysearch.train import METHODS

    cases = [
        ("train", "--method", METHODS), ("train", "--weighting", WEIGHTINGS), ("train", "--backbone", BACKBONES),
        ("train", "--cf-model", CF_MODELS), ("train", "--dataset", DATASETS), ("cf", "--model", CF_MODELS),
        ("cf2label", "--model", CF_MODELS), ("tune", "--method", METHODS), ("stats", "--dataset", DATASETS),
    ]
    for command, flag, registry in cases:
        assert _listed(fill_choices(_option(command, flag).help)) == registry.names(), (command, flag)
    adapters = [n for n in DATASETS.names() if DATASETS.get(n).kind == "adapter"]
    assert _listed(fill_choices(_option("prepare", "--dataset").help)) == adapters
    from raysearch.experiment.protocol import DEFAULT_VARIANTS

    assert f"Default: {', '.join(DEFAULT_VARIANTS)}." in fill_choices(_option("experiment", "--variants").help)
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "loss_rescaled" in r.output and "{" not in r.output, r.output


def test_shared_options_have_one_declaration():
    """A flag several commands share has the same help and type everywhere."""
    shared = ("--data-root", "--json", "--dataset", "--split-seed", "--label-ratio", "--address", "--epochs",
              "--cpus-per-trial", "--max-concurrent", "--wandb-project", "--no-wandb", "--top", "--method")
    other = {("prepare", "--dataset"), ("download-images", "--dataset"),  # public dumps only
             ("cf", "--epochs"), ("cf2label", "--epochs")}  # cf.epochs, not train.epochs
    seen: dict[str, set] = {}
    for name, cmd in _commands().items():
        for p in cmd.params:
            for flag in set(p.opts) & set(shared) - {f for c, f in other if c == name}:
                seen.setdefault(flag, set()).add((p.help, p.type_descriptor.annotation))
    assert set(seen) == set(shared)
    assert {f: len(v) for f, v in seen.items() if len(v) > 1} == {}
    assert _option("cf", "--data-root").help == _option("train", "--data-root").help


def test_train_out_never_replaces_a_model(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.json").write_text("{}")
    r = CliRunner().invoke(app, ["train", "--dataset", "synthetic-tiny", "--out", str(out)])
    assert r.exit_code == 2 and "already holds a model" in r.output, r.output
    assert (out / "model.json").read_text() == "{}"  # refused before any work, nothing touched


def test_tune_method_typo_names_the_method_not_the_space_file():
    from raysearch.registry import UnknownNameError
    from raysearch.search.tune import SweepConfig, build_space

    with pytest.raises(UnknownNameError, match="unknown method 'mlt'; choose one of: .*image_only") as e:
        build_space(SweepConfig(dataset="synthetic-tiny", method="mlt"))
    assert ".yaml" not in str(e.value)


@pytest.mark.parametrize("item", ["train.lr=&a 0.1", "train.lr=*a", "cf.hidden=[&a 1, *a]"])
def test_set_refuses_anchors_as_config_files_do(item):
    with pytest.raises(ConfigError) as e:
        build_run_config(None, {}, [item])
    msg = str(e.value)
    assert msg.startswith(f"--set {item}: ") and "anchors and aliases" in msg and "\n" not in msg, msg


def test_cli_set_anchor_is_one_line():
    r = runner.invoke(app, ["train", "--dataset", "synthetic-tiny", "--set", "train.lr=&a 0.1"])
    assert r.exit_code == 2, r.output
    assert "anchors and aliases" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_set_reads_exponents_and_keeps_other_scalars():
    run = build_run_config(None, {}, ["train.lr=2e-3", "train.weight_decay=1E-5", "cf.model=bpr",
                                      "train.trainable_blocks=2", "train.aux_epochs=~"])
    assert (run.train.lr, run.train.weight_decay, run.cf.model) == (2e-3, 1e-5, "bpr")
    assert (run.train.trainable_blocks, run.train.aux_epochs) == (2, None)


def test_set_deeply_nested_value_is_one_line():
    with pytest.raises(ConfigError, match=r"^--set cf\.hidden=\[\[\[") as e:
        build_run_config(None, {}, ["cf.hidden=" + "[" * 5000 + "]" * 5000])
    assert "\n" not in str(e.value) and len(str(e.value)) < 800


def test_cf_also_refuses_anchors_and_reads_exponents():
    from raysearch._cli.cf import _also
    from raysearch.config import CFConfig

    assert _also("bpr:lr=1e-4,dim=8", CFConfig()).lr == 1e-4
    with pytest.raises(typer.Exit):
        _also("bpr:lr=&a 0.1", CFConfig())


@pytest.mark.parametrize("flags, message", [
    (["--alpha", "-1"], "train.alpha must be >= 0, got -1.0"),
    (["--omega", "0"], "train.omega must be > 0, got 0.0"),
])
def test_cli_alpha_omega_error_names_the_wrong_one(flags, message):
    r = runner.invoke(app, ["train", "--dataset", "synthetic-tiny", *flags])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_cli_config_with_a_duplicate_key_is_one_line(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("train:\n  lr: 0.5\ntrain:\n  epochs: 1\n")
    r = runner.invoke(app, ["train", "--dataset", "synthetic-tiny", "--config", str(cfg)])
    assert r.exit_code == 2, r.output
    assert f"{cfg}: key 'train' is defined twice (lines 1 and 3)" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
