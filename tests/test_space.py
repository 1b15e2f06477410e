"""Search-space YAML: schema validation (errors name file + key) and the Optuna define-by-run."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from raysearch.config import ConfigError, RunConfig
from raysearch.search.space import default_space_path, load_space, parse_space, sample_configs, spaces_dir

REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "base": {"train": {"backbone": "tiny_cnn", "epochs": 3}},
    "params": {
        "train.weighting": {"type": "categorical", "choices": ["uniform", "interaction", "loss"]},
        "train.alpha": {"type": "float", "low": 0.0, "high": 5.0},
        "train.omega": {"type": "float", "low": 1.0, "high": 10.0, "when": {"train.weighting": ["interaction", "loss"]}},
        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "cf.model": {"type": "categorical", "choices": ["vaecf", "bpr"]},
        "cf.hidden": {"type": "categorical", "choices": [[32], [64, 32]], "when": {"cf.model": "vaecf"}},
        "cf.dim": {"type": "int", "low": 8, "high": 32, "step": 8},
    },
    "asha": {"grace_period": 1, "reduction_factor": 3},
}


def _write(tmp_path: Path, data, name="space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def test_every_shipped_space_parses():
    files = sorted((REPO / "search_spaces").glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"default", "synthetic", "toys", "clothing", "movielens", "pinterest"} <= names
    for f in files:
        s = load_space(f)
        assert "train.alpha" in s.names and "train.weighting" in s.names, f
        assert s.param("train.alpha").high >= 5.0  # searched wider than the paper's 1 < alpha < 2
        omega = s.param("train.omega")  # Omega clips non-uniform weights only
        (cond, values), = omega.when
        assert cond == "train.weighting" and {"interaction", "loss"} <= set(values) and "uniform" not in values, f


def test_default_space_lookup():
    assert default_space_path("synthetic").name == "synthetic.yaml"
    assert default_space_path("synthetic-tiny").name == "synthetic.yaml"
    assert default_space_path("no-such-dataset").name == "default.yaml"
    assert spaces_dir().is_dir()


def test_conditionals_and_types(tmp_path):
    space = load_space(_write(tmp_path, GOOD))
    assert space.grace_period == 1 and space.reduction_factor == 3 and space.rung_metric == "val_map"
    assert load_space(_write(tmp_path, {**GOOD, "asha": {"metric": "val_auc"}}, "auc.yaml")).rung_metric == "val_auc"
    runs = sample_configs(space, 40, seed=3)
    assert all(isinstance(r, RunConfig) for r in runs)
    # Omega is only sampled for non-uniform weighting: uniform trials keep the base value
    uniform = [r for r in runs if r.train.weighting == "uniform"]
    weighted = [r for r in runs if r.train.weighting != "uniform"]
    assert uniform and weighted
    assert {r.train.omega for r in uniform} == {RunConfig().train.omega}
    assert len({r.train.omega for r in weighted}) == len(weighted)
    # VAECF-only options only for VAECF; list choices come back as tuples
    assert {r.cf.hidden for r in runs if r.cf.model == "bpr"} == {RunConfig().cf.hidden}
    assert {r.cf.hidden for r in runs if r.cf.model == "vaecf"} <= {(32,), (64, 32)}
    assert {r.cf.dim for r in runs} <= {8, 16, 24, 32}
    assert all(1e-4 <= r.train.lr <= 1e-2 for r in runs)
    assert all(r.train.backbone == "tiny_cnn" and r.train.epochs == 3 for r in runs)


def test_define_by_run_records_only_active_params(tmp_path):
    space = load_space(_write(tmp_path, GOOD))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = space.define_by_run()
    seen = []
    for _ in range(20):
        t = study.ask()
        fn(t)
        seen.append(t.params)
        study.tell(t, 0.0)
    for p in seen:
        assert ("train.omega" in p) == (p["train.weighting"] != "uniform")
        assert ("cf.hidden" in p) == (p["cf.model"] == "vaecf")


def test_method_all_and_pinned(tmp_path):
    space = load_space(_write(tmp_path, GOOD))
    all_ = space.with_method("all")
    assert all_.names[0] == "train.method"
    assert set(all_.param("train.method").choices) == {"image_only", "mtl", "sequential", "contrastive"}
    methods = {r.train.method for r in sample_configs(all_, 30, seed=1)}
    assert len(methods) >= 3
    pinned = space.with_method("image_only")
    assert "train.method" not in pinned.names and pinned.base.train.method == "image_only"
    assert pinned.names == ["train.lr"]  # CF/weighting parameters are dead for image_only
    assert set(space.with_method("sequential").names) == set(space.names)
    with pytest.raises(ConfigError, match="train.method"):
        space.with_method("nope")


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["params"].update({"train.alpah": {"type": "float", "low": 0, "high": 1}}), "train.alpah"),
    (lambda d: d["params"].update({"model.lr": {"type": "float", "low": 0, "high": 1}}), "model.lr"),
    (lambda d: d["params"]["train.alpha"].update(low=5.0, high=1.0), "bad range"),
    (lambda d: d["params"]["train.lr"].update(low=0.0), "log scale needs low > 0"),
    (lambda d: d["params"]["train.alpha"].update(high="big"), "train.alpha.high"),
    (lambda d: d["params"]["train.alpha"].update(type="uniform"), "train.alpha.type"),
    (lambda d: d["params"]["train.alpha"].update(lo=1), "unknown option"),
    (lambda d: d["params"]["cf.model"].update(choices=["vaecf", 3]), "cf.model.choices"),
    (lambda d: d["params"]["cf.model"].update(choices=["vaecf", "nope"]), "nope"),
    (lambda d: d["params"]["train.omega"].update(when={"train.weightin": ["loss"]}), "train.weightin"),
    (lambda d: d["params"]["train.omega"].update(when={"train.weighting": ["sqrt"]}), "sqrt"),
    (lambda d: d["params"]["train.alpha"].update(low=-1.0), "rejected by the config"),
    (lambda d: d["params"].update({"train.backbone": {"type": "float", "low": 0, "high": 1}}), "train.backbone"),
    (lambda d: d.update(asha={"grace": 1}), "grace"),
    (lambda d: d.update(asha={"metric": "val_mAP"}), "asha.metric"),  # a typo, not silently val_map
    (lambda d: d.update(spaces={}), "spaces"),
    (lambda d: d["base"]["train"].update(epochz=3), "epochz"),
    # a registered name the base gets wrong fails here, not retried in every trial
    (lambda d: d["base"]["train"].update(weighting="foo"), "base: key 'train.weighting'"),
    (lambda d: d["base"].setdefault("cf", {}).update(model="foo"), "base: key 'cf.model'"),
])
def test_bad_space_names_file_and_key(tmp_path, mutate, needle):
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    path = _write(tmp_path, data, "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_space(path)
    msg = str(e.value)
    assert str(path) in msg and needle in msg, msg


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("params: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_space(bad)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_space([1, 2], "x.yaml")


def test_load_space_by_shipped_name():
    from raysearch.search.space import load_space, spaces_dir

    assert load_space("synthetic").path == str(spaces_dir() / "synthetic.yaml")
    with pytest.raises(ConfigError, match=r"not found: nope \(shipped spaces: .*synthetic"):
        load_space("nope")


# ----------------------------------------------------------------------------- issue 19


def test_parameter_defined_twice_is_refused(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text("params:\n"
                 "  train.alpha: {type: float, low: 0.0, high: 5.0}\n"
                 "  train.lr: {type: float, low: 0.001, high: 0.01, log: true}\n"
                 "  train.alpha: {type: float, low: 2.0, high: 3.0}\n")  # would silently win
    with pytest.raises(ConfigError) as e:
        load_space(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "train.alpha" in msg and "lines 2 and 4" in msg, msg
    assert "\n" not in msg


def test_duplicate_section_in_a_space_is_refused(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text("params:\n  train.alpha: {type: float, low: 0.0, high: 5.0}\n"
                 "base:\n  train: {epochs: 3}\n"
                 "params:\n  train.lr: {type: float, low: 0.001, high: 0.01}\n")
    with pytest.raises(ConfigError, match=r"key 'params' .*lines 1 and 5"):
        load_space(p)


def test_exponent_bounds_are_floats(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text("params:\n  train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
                 "  train.weight_decay: {type: categorical, choices: [0, 1e-5, 1e-4]}\n")
    space = load_space(p)
    lr, wd = space.params
    assert (lr.low, lr.high) == (1e-4, 1e-2)
    assert wd.choices == (0.0, 1e-5, 1e-4) and all(isinstance(c, float) for c in wd.choices)


def test_keys_of_mixed_types_are_an_error_not_a_crash(tmp_path):
    # sorting the unknown keys for the message compared str with bool: a TypeError traceback
    for text, needle in (("asha:\n  base: null\n  false: null\n", "asha"), ("1: x\nbase: {}\n", "top-level"),
                         ("params:\n  train.alpha: {type: float, low: 0, high: 1, 2: x, z: y}\n", "unknown option")):
        p = tmp_path / "space.yaml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=needle) as e:
            load_space(p)
        assert str(e.value).startswith(f"{p}: ")
