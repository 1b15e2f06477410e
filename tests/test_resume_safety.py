"""Issue 19: a resume validates what it resumes, Ray start failures are one line, and two
commands racing for one sweep name: one wins, the other is refused.

No Ray instance is needed: every refusal here comes before Ray starts (``init_ray`` is replaced
by a function that fails the test if it is reached, or by one raising Ray's start-up error).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raysearch import _io
from raysearch.cli import app
from raysearch.config import ConfigError
from raysearch.errors import RaysearchError, RayStartError
from raysearch.search import cluster
from raysearch.search.tune import SweepConfig, original_sweep_config, run_sweep

runner = CliRunner()
TIMEOUT_MSG = ("The current node timed out during startup. This could happen because some of the raylet failed "
               "to startup or the GCS has become overloaded.")


@pytest.fixture
def no_ray(monkeypatch):
    """Reaching Ray's start-up fails the test: every refusal must come before it."""
    def refuse(*a, **k):
        raise AssertionError("Ray was started: the refusal must come first")

    monkeypatch.setattr(cluster, "init_ray", refuse)


def _saved_sweep(tmp_path: Path, name: str = "s1", meta_extra: dict | None = None, **kw) -> tuple[SweepConfig, Path]:
    """A ``sweep.json`` as a started sweep leaves it (trials=5, epochs=3); returns (the resume
    command's config, the file)."""
    from raysearch.data import load_dataset

    saved = SweepConfig(dataset="synthetic-tiny", storage=str(tmp_path / "runs"), name=name, trials=5, epochs=3,
                        scheduler="none", seed=7, **kw)
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True)
    meta = {"name": name, "sweep": dataclasses.asdict(saved), "space_file": None, "params": [],
            "wandb_project": saved.wandb_project,
            "dataset_fingerprint": load_dataset("synthetic-tiny").fingerprint, **(meta_extra or {})}
    p = run_dir / "sweep.json"
    p.write_text(json.dumps(meta, indent=2))
    resume = SweepConfig(dataset="synthetic-tiny", storage=str(tmp_path / "runs"), name=name, resume=True)
    return resume, p


def _one_line_error(r, *needles: str) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- readable and complete


@pytest.mark.parametrize("content, reason", [
    ("TRUNCATE", "unreadable or truncated"),
    ("", "unreadable or truncated"),
    (b"\xff\xfe\x00garbage", "unreadable or truncated"),
    ("[1, 2]", "incomplete sweep record (missing sweep)"),
    ('{"name": "s1"}', "incomplete sweep record (missing sweep)"),
    ('{"sweep": {"dataset": "synthetic-tiny"}}', "incomplete sweep record (missing trials"),
    ('{"sweep": {"dataset": "synthetic-tiny", "trials": "five", "scheduler": "asha", "search": "optuna", '
     '"seed": 0, "cpus_per_trial": 1, "workers_per_trial": 1}}', "not a sweep record this version can resume"),
    ('{"sweep": {"dataset": "synthetic-tiny", "trials": 0, "scheduler": "asha", "search": "optuna", '
     '"seed": 0, "cpus_per_trial": 1, "workers_per_trial": 1}}', "not a sweep record this version can resume"),
    ('{"sweep": {"dataset": "synthetic-tiny", "trials": 5, "scheduler": "asha", "search": "optuna", '
     '"seed": 0, "cpus_per_trial": 1, "workers_per_trial": 1, "bogus": 1}}', "unknown settings: bogus"),
])
def test_resume_from_a_bad_sweep_json_is_one_line_naming_it(tmp_path, no_ray, content, reason):
    resume, p = _saved_sweep(tmp_path)
    if content == "TRUNCATE":
        content = p.read_text()[:150]
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as e:
        run_sweep(resume)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and reason in msg, msg
    # and through the CLI: one error line, no JSONDecodeError/KeyError traceback
    r = runner.invoke(app, ["tune", "--dataset", "synthetic-tiny", "--name", "s1", "--storage",
                            str(tmp_path / "runs"), "--resume", "--no-wandb"])
    _one_line_error(r, "sweep.json", reason)


# ----------------------------------------------------------------------------- flags agree


def test_resume_refuses_flags_that_contradict_the_saved_sweep(tmp_path, no_ray):
    resume, p = _saved_sweep(tmp_path)
    with pytest.raises(ConfigError) as e:
        run_sweep(dataclasses.replace(resume, trials=9, epochs=4, scheduler="asha"))
    msg = str(e.value)
    assert "contradicts the saved sweep" in msg and str(p) in msg and "\n" not in msg
    assert "trials: saved 5, given 9" in msg and "epochs: saved 3, given 4" in msg
    assert "scheduler" not in msg  # --scheduler asha is the default: not a contradiction
    r = runner.invoke(app, ["tune", "--dataset", "synthetic-tiny", "--name", "s1", "--storage",
                            str(tmp_path / "runs"), "--resume", "--epochs", "4", "--seed", "3"])
    _one_line_error(r, "contradicts the saved sweep", "epochs: saved 3, given 4", "seed: saved 7, given 3")


def test_resume_refuses_a_flag_given_at_its_default_value(tmp_path, no_ray):
    """`--dataset synthetic` is the default, yet typed on the command line it names another dataset:
    refused like any other contradicting flag (the experiment's --resume does the same)."""
    _saved_sweep(tmp_path)
    r = runner.invoke(app, ["tune", "--dataset", "synthetic", "--name", "s1", "--storage",
                            str(tmp_path / "runs"), "--resume", "--no-wandb"])
    _one_line_error(r, "contradicts the saved sweep", "dataset: saved 'synthetic-tiny', given 'synthetic'")


def test_resume_keeps_the_saved_settings_and_takes_where_to_run_from_the_command(tmp_path):
    resume, _ = _saved_sweep(tmp_path)
    # flags left at their defaults, or repeating the saved values, are no contradiction
    for given in (resume, dataclasses.replace(resume, trials=5, epochs=3, seed=7, scheduler="none")):
        cfg = original_sweep_config(dataclasses.replace(given, address="auto", wandb=False))
        assert (cfg.trials, cfg.epochs, cfg.seed, cfg.scheduler) == (5, 3, 7, "none")
        assert cfg.resume and cfg.address == "auto" and cfg.name == "s1"
        assert cfg.wandb is False  # --no-wandb may turn W&B off for the rest of the sweep
        assert cfg.storage == str(tmp_path / "runs")


def test_a_sweep_saved_with_asha_settings_0_resumes_with_the_spaces(tmp_path):
    """Before 0 was refused, --grace-period 0 / --reduction-factor 0 meant "the space file's": such a
    sweep.json still resumes, with None (the space's), not a refusal of its own record."""
    resume, p = _saved_sweep(tmp_path)
    meta = json.loads(p.read_text())
    meta["sweep"].update(grace_period=0, reduction_factor=0)
    p.write_text(json.dumps(meta))
    cfg = original_sweep_config(resume)
    assert (cfg.grace_period, cfg.reduction_factor) == (None, None) and cfg.trials == 5


# ----------------------------------------------------------------------------- same dataset


def test_resume_refuses_a_changed_dataset(tmp_path, no_ray):
    resume, p = _saved_sweep(tmp_path, meta_extra={"dataset_fingerprint": "0" * 64})
    with pytest.raises(ConfigError) as e:
        run_sweep(resume)
    msg = str(e.value)
    assert "changed since the sweep began" in msg and "000000000000 ->" in msg and str(p) in msg
    assert "\n" not in msg


def test_resume_with_the_same_dataset_goes_on_to_the_tuner_check(tmp_path, no_ray):
    resume, _ = _saved_sweep(tmp_path)
    # the fingerprint agrees: the next check (Tune's experiment state) is the one that refuses here
    with pytest.raises(ConfigError, match="no restorable sweep"):
        run_sweep(resume)


def test_a_new_sweep_records_the_dataset_fingerprint(tmp_path):
    from raysearch.search.tune import _write_meta, build_space

    cfg = SweepConfig(dataset="synthetic-tiny", storage=str(tmp_path / "runs"), name="n")
    run_dir = tmp_path / "runs" / "n"
    run_dir.mkdir(parents=True)
    _write_meta(run_dir, cfg, build_space(cfg), "n", "f" * 64)
    assert json.loads((run_dir / "sweep.json").read_text())["dataset_fingerprint"] == "f" * 64


# ----------------------------------------------------------------------------- one command per sweep name


def test_a_second_command_on_a_running_sweep_is_refused(tmp_path, no_ray):
    cfg = SweepConfig(dataset="synthetic-tiny", storage=str(tmp_path / "runs"), name="busy", wandb=False)
    with _io.run_lock(tmp_path / "runs" / "busy", what="the test"):
        for c in (cfg, dataclasses.replace(cfg, resume=True)):
            with pytest.raises(_io.BusyError) as e:
                run_sweep(c)
            msg = str(e.value)
            assert f"sweep 'busy' is being run by another process (pid {os.getpid()})" in msg and "\n" not in msg
        assert not (tmp_path / "runs" / "busy").exists()  # refused before anything was written
    # released: the same command now gets past the lock (to the next refusal: Ray is not allowed here)
    with pytest.raises(AssertionError, match="Ray was started"):
        run_sweep(cfg)


_HOLDER = """
import sys
from raysearch import _io
with _io.run_lock(sys.argv[1], what="x"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_run_lock_refuses_another_process_with_its_pid_and_dies_with_it(tmp_path):
    folder = tmp_path / "out" / "exp"
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(_io.BusyError) as e:
            with _io.run_lock(folder, what=f"experiment folder {folder}"):
                pass
        assert str(e.value).startswith(f"experiment folder {folder} is being run by another process "
                                       f"(pid {child.pid})")
        assert isinstance(e.value, RaysearchError)
    finally:
        child.kill()  # a killed holder leaves no stale lock
        child.wait(10)
    with _io.run_lock(folder, what="x") as lock:
        assert lock == tmp_path / "out" / ".exp.lock" and lock.read_text().split()[0] == str(os.getpid())
    assert not folder.exists()  # the lock lives beside the folder, never creates it


# ----------------------------------------------------------------------------- Ray start-up


@pytest.fixture
def ray_times_out(monkeypatch):
    import ray

    calls = []

    def init(*a, **k):
        calls.append(k)
        raise Exception(TIMEOUT_MSG)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    return calls


def test_ray_start_timeout_is_one_line_with_the_cause_and_the_setting(ray_times_out):
    with pytest.raises(RayStartError) as e:
        cluster.init_ray(None)
    msg = str(e.value)
    assert ray_times_out and "\n" not in msg
    assert msg.startswith("could not start a local Ray instance: Exception: The current node timed out during startup")
    assert "load average" in msg and "RAY_gcs_server_port_wait_time_s" in msg and "--address auto" in msg


def test_joining_a_cluster_that_is_not_there_is_one_line(monkeypatch):
    import ray

    def init(*a, **k):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to "
                              "by setting `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(cluster, "_api_server_url", lambda address: None)  # no GCS to ask either
    with pytest.raises(RayStartError) as e:
        cluster.init_ray("10.0.0.9:6379")
    assert str(e.value).startswith("could not join Ray at '10.0.0.9:6379': ConnectionError: Could not find any")
    assert "\n" not in str(e.value)


def test_a_sweep_on_a_loaded_machine_is_one_error_line(tmp_path, ray_times_out):
    r = runner.invoke(app, ["tune", "--dataset", "synthetic-tiny", "--name", "loaded", "--storage",
                            str(tmp_path / "runs"), "--no-wandb", "--trials", "1"])
    _one_line_error(r, "could not start a local Ray instance", "timed out during startup",
                    "RAY_gcs_server_port_wait_time_s")
    assert not (tmp_path / "runs" / "loaded").exists()
