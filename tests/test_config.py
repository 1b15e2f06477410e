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
