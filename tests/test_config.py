"""Typed configs: unknown keys and wrong types are errors naming the key and the file."""
from __future__ import annotations

import pytest

from raysearch.config import (
    CFConfig, ConfigError, RunConfig, SplitConfig, TrainConfig, dump_run_config, from_dict,
    load_run_config, to_dict,
)


def test_round_trip_through_yaml(tmp_path):
    cfg = RunConfig(
        dataset="synthetic", split=SplitConfig(seed=3, label_ratio=0.1),
        cf=CFConfig(model="bpr", dim=32, hidden=(128, 64)),
        train=TrainConfig(method="mtl", weighting="loss", alpha=1.25, omega=2.0, trainable_blocks=2),
    )
    p = tmp_path / "best.yaml"
    dump_run_config(cfg, p)
    assert load_run_config(p) == cfg


def test_int_is_accepted_for_float_and_lists_become_tuples():
    cfg = from_dict(RunConfig, {"train": {"alpha": 2}, "cf": {"hidden": [64]}})
    assert cfg.train.alpha == 2.0 and isinstance(cfg.train.alpha, float)
    assert cfg.cf.hidden == (64,)


def test_unknown_key_names_key_section_and_file(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("train:\n  alhpa: 1.0\n")
    with pytest.raises(ConfigError) as e:
        load_run_config(p)
    msg = str(e.value)
    assert "alhpa" in msg and str(p) in msg and "train" in msg and "alpha" in msg  # lists valid keys


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="'epochs' expects int"):
        from_dict(TrainConfig, {"epochs": "ten"})
    with pytest.raises(ConfigError, match="'bias' expects bool"):
        from_dict(CFConfig, {"bias": 1})
    with pytest.raises(ConfigError, match="'split' must be a mapping"):
        from_dict(RunConfig, {"split": 0.7})


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="label_ratio"):
        SplitConfig(label_ratio=0.0)
    with pytest.raises(ConfigError, match="sum to 1"):
        SplitConfig(train=0.5, val=0.2, test=0.2)
    with pytest.raises(ConfigError, match="omega"):
        TrainConfig(omega=0)


def test_optional_int_accepts_none_and_int():
    assert from_dict(TrainConfig, {"trainable_blocks": None}).trainable_blocks is None
    assert from_dict(TrainConfig, {"trainable_blocks": 3}).trainable_blocks == 3
    assert to_dict(TrainConfig())["trainable_blocks"] is None


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(p)


def test_non_positive_fields_are_each_named():
    with pytest.raises(ConfigError, match=r"^train.lr=-1.0, train.batch_size=0: must be positive$"):
        TrainConfig(lr=-1.0, batch_size=0)
    with pytest.raises(ConfigError, match=r"^cf.dim=0: must be positive$"):
        CFConfig(dim=0)


# ----------------------------------------------------------------------------- the YAML loader (issue 19)


def test_duplicate_top_level_key_is_refused_naming_file_key_and_lines(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("train:\n  lr: 0.5\ncf:\n  dim: 8\ntrain:\n  alpha: 1.0\n")  # the first 'train' would be dropped
    with pytest.raises(ConfigError) as e:
        load_run_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "'train'" in msg and "lines 1 and 5" in msg, msg
    assert "\n" not in msg


def test_duplicate_nested_key_is_refused_with_its_path(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("train:\n  lr: 0.1\n  alpha: 1.0\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"key 'train\.lr' .*lines 2 and 4"):
        load_run_config(p)
    p.write_text("train: {lr: 0.1, lr: 0.2}\n")  # flow style, one line
    with pytest.raises(ConfigError, match=r"key 'train\.lr' .*both on line 1"):
        load_run_config(p)


def test_keys_equal_after_parsing_are_duplicates():
    from raysearch.config import parse_yaml

    for text in ("a: 1\n'a': 2\n", "1: x\n0x1: y\n", "true: x\nyes: y\n"):
        with pytest.raises(ConfigError, match="twice"):
            parse_yaml(text, "t.yaml")
    # the same key in two different mappings is fine
    assert parse_yaml("a: {x: 1}\nb: {x: 1}\n", "t.yaml") == {"a": {"x": 1}, "b": {"x": 1}}
    assert parse_yaml("- {x: 1}\n- {x: 2}\n", "t.yaml") == [{"x": 1}, {"x": 2}]


def test_duplicate_key_message_caps_a_huge_key():
    from raysearch.config import parse_yaml

    key = "k" * 100_000  # a long key is an explicit one ('? key'): plain keys stop at 1024 characters
    with pytest.raises(ConfigError) as e:
        parse_yaml(f"? {key}\n: 1\n? {key}\n: 2\n", "t.yaml")
    assert len(str(e.value)) < 600 and "characters" in str(e.value)


def test_exponent_without_dot_is_a_float(tmp_path):
    from raysearch.config import parse_yaml

    p = tmp_path / "run.yaml"
    p.write_text("train:\n  weight_decay: 1e-4\n  lr: 2E-3\n  tau: 1.5e0\ncf:\n  lr: 5e+1\n")
    cfg = load_run_config(p)
    assert (cfg.train.weight_decay, cfg.train.lr, cfg.train.tau, cfg.cf.lr) == (1e-4, 2e-3, 1.5, 50.0)
    got = parse_yaml("a: 1e-4\nb: -1e4\nc: .5e1\nd: 1_0e1\n", "t.yaml")
    assert got == {"a": 1e-4, "b": -1e4, "c": 5.0, "d": 100.0} and all(isinstance(v, float) for v in got.values())


def test_other_scalars_read_as_before():
    import yaml

    from raysearch.config import parse_yaml

    text = ("i: 10\nh: 0x1F\no: 017\ns: 1:30\nf: 1.5\ng: 1.0e-3\nn: .nan\ninf: -.inf\nb: yes\nz: ~\n"
            "w: e4\nx: 1e\ny: 1e-\nq: '1e-4'\nd: 2024-01-02\nv: 1.2.3\nt: abc\n")
    ours, theirs = parse_yaml(text, "t.yaml"), yaml.safe_load(text)
    assert ours.keys() == theirs.keys()
    for k in ours:
        if k == "n":
            assert ours[k] != ours[k] and theirs[k] != theirs[k]  # NaN
        else:
            assert ours[k] == theirs[k] and type(ours[k]) is type(theirs[k]), k
    assert yaml.safe_load("1e-4") == "1e-4"  # PyYAML's own SafeLoader is left alone


def test_anchor_is_refused_in_one_line(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("train:\n  lr: &a 0.1\n")
    with pytest.raises(ConfigError, match="anchors and aliases") as e:
        load_run_config(p)
    assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("kw, message", [
    ({"alpha": -1.0}, "train.alpha must be >= 0, got -1.0"),
    ({"omega": 0.0}, "train.omega must be > 0, got 0.0"),
    ({"omega": -2.5}, "train.omega must be > 0, got -2.5"),
])
def test_alpha_and_omega_errors_name_the_wrong_one(kw, message):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kw)
    assert str(e.value) == message


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field, value, flag", [
    ("gpus_per_trial", NAN, "--gpus-per-trial"),   # once hung the sweep: NaN passed "< 0"
    ("cpus_per_trial", NAN, "--cpus-per-trial"),   # once a 55-line traceback from int(nan)
    ("cpus_per_trial", 0.0, "--cpus-per-trial"),
    ("workers_per_trial", 0, "--workers-per-trial"),
    ("grace_period", 0, "--grace-period"),         # 0 once fell back to the space's value silently
    ("grace_period", -3, "--grace-period"),        # once Ray's AssertionError after Ray started
    ("reduction_factor", 1, "--reduction-factor"),
    ("checkpoint_overhead", NAN, "--checkpoint-overhead"),
    ("checkpoint_overhead", INF, "--checkpoint-overhead"),
    ("checkpoint_overhead", 2.0, "--checkpoint-overhead"),  # a share of training time
    ("checkpoint_overhead", -0.1, "--checkpoint-overhead"),
    ("checkpoint_mtbf", -5.0, "--checkpoint-mtbf"),
    ("checkpoint_mtbf", NAN, "--checkpoint-mtbf"),
    ("checkpoint_every", -1, "--checkpoint-every"),
    ("max_failures", -1, "--max-failures"),
    ("status_every", NAN, "--status-every"),
    ("max_concurrent", 0, "--max-concurrent"),
])
def test_sweep_numeric_options_name_the_option_and_the_value(field, value, flag):
    """Each bad number gets its own one-line error (option, range, value) before Ray starts."""
    from raysearch.config import SweepConfig

    with pytest.raises(ConfigError) as e:
        SweepConfig(**{field: value})
    msg = str(e.value)
    assert msg.startswith(f"{flag} must be") and msg.endswith(f"got {value}") and "\n" not in msg
    assert msg.count("--") == 1, msg  # names only the option that is wrong


def test_rung_metric_is_a_registered_choice():
    from raysearch.config import SweepConfig

    assert SweepConfig(rung_metric="val_auc").rung_metric == "val_auc"
    with pytest.raises(ConfigError, match="--rung-metric 'auc' unknown; choose one of: val_auc, val_map"):
        SweepConfig(rung_metric="auc")


def test_sweep_numeric_options_accept_their_edges():
    from raysearch.config import SweepConfig

    cfg = SweepConfig(gpus_per_trial=0.0, grace_period=1, reduction_factor=2, checkpoint_overhead=1.0,
                      checkpoint_mtbf=0.0, status_every=INF, max_failures=0, checkpoint_every=0)
    assert (cfg.grace_period, cfg.reduction_factor, cfg.checkpoint_overhead) == (1, 2, 1.0)


@pytest.mark.parametrize("field, value, flag", [
    ("cpus_per_trial", NAN, "--cpus-per-trial"), ("gpus_per_trial", NAN, "--gpus-per-trial"),
    ("checkpoint_every", -1, "--checkpoint-every"), ("max_failures", -2, "--max-failures"),
])
def test_experiment_numeric_options_name_the_option_and_the_value(field, value, flag):
    from raysearch.experiment.protocol import ExperimentConfig

    with pytest.raises(ConfigError, match=f"^{flag} must be .*got {value}$"):
        ExperimentConfig(**{field: value})


def test_train_threads_is_a_count():
    assert TrainConfig(threads=4).threads == 4 and TrainConfig().threads == 0
    with pytest.raises(ConfigError, match=r"^train.threads must be a finite number >= 0, got -1$"):
        TrainConfig(threads=-1)


def test_numeric_checks_take_numpy_and_huge_ints_and_refuse_epochs_0_in_experiments():
    import numpy as np

    from raysearch.config import SweepConfig
    from raysearch.experiment.protocol import ExperimentConfig

    assert SweepConfig(trials=np.int64(4), cpus_per_trial=np.float32(1.5)).trials == 4
    with pytest.raises(ConfigError, match=r"^--trials must be a finite number >= 1, got"):
        SweepConfig(trials=-(10 ** 400))  # once an OverflowError traceback
    assert SweepConfig(trials=10 ** 30).trials == 10 ** 30
    with pytest.raises(ConfigError, match=r"^--epochs must be a finite number >= 1, got 0$"):
        ExperimentConfig(epochs=0)  # once silently kept each variant's own epochs
