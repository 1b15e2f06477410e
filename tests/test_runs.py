"""raysearch.runs: a sweep's results and best model resolved from a local path or a URI through pyarrow
filesystems (``file://``; a non-local filesystem stood in for by fsspec's in-memory store registered for
``s3://``), so ``predict --model`` works on a cloud sweep; missing runs and URIs are one-line errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_predict import cli, split_image_paths, train_tiny

from raysearch import runs
from raysearch.config import ConfigError
from raysearch.model.io import load_model

fsspec = pytest.importorskip("fsspec")
from pyarrow.fs import FSSpecHandler, PyFileSystem  # noqa: E402

TRIAL_A = "trial_a_00000_0_x"
TRIAL_B = "trial_b_00001_1_y"
CKPT = "checkpoint_000001"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("model") / "tiny")


def results_frame(ck_a: str, ck_b: str) -> pd.DataFrame:
    """Two finished trials; a (val mAP 0.9) is the best one."""
    rows = [dict(trial_id="a", method="image_only", weighting="uniform", best_val_map=0.9, test_map=0.5, epochs_run=2,
                 stop_reason="completed", wall_time_s=1.0, train_time_s=1.0, checkpoint=ck_a),
            dict(trial_id="b", method="image_only", weighting="uniform", best_val_map=0.4, test_map=0.6, epochs_run=2,
                 stop_reason="completed", wall_time_s=1.0, train_time_s=1.0, checkpoint=ck_b)]
    df = pd.DataFrame(rows)
    df["config"] = json.dumps({"dataset": "synthetic-tiny"})
    return df


def local_run(model_dir: Path, root: Path) -> Path:
    """A sweep run directory as Tune leaves it: trial folders with checkpoints + results.parquet."""
    run = root / "run"
    for t in (TRIAL_A, TRIAL_B):
        shutil.copytree(model_dir, run / t / CKPT)
    (run / TRIAL_A / CKPT / "epoch_state.pt").write_bytes(b"x" * 1000)  # a resume state: never fetched
    results_frame(str(run / TRIAL_A / CKPT), str(run / TRIAL_B / CKPT)).to_parquet(run / runs.RESULTS_FILE)
    return run


@pytest.fixture
def memory_s3(monkeypatch, tmp_path):
    """``s3://`` served by an empty fsspec in-memory filesystem (through pyarrow's PyFileSystem), and the
    remote-copy cache in tmp_path; yields (fsspec fs, upload(local_dir, key))."""
    mem = fsspec.filesystem("memory")
    mem.store.clear()
    mem.pseudo_dirs[:] = [""]
    fs = PyFileSystem(FSSpecHandler(mem))
    monkeypatch.setitem(runs.FILESYSTEMS, "s3", lambda uri: (fs, uri.split("://", 1)[1]))
    monkeypatch.setattr(runs, "cache_root", lambda: tmp_path / "remote-cache")

    def upload(local: Path, key: str) -> None:
        for f in sorted(local.rglob("*")):
            if f.is_file():
                mem.pipe_file(f"/{key}/{f.relative_to(local).as_posix()}", f.read_bytes())

    yield mem, upload
    mem.store.clear()


def scores_of(output: str) -> list[list[float]]:
    return [[t["score"] for t in p["top"]] for p in json.loads(output)["predictions"]]


def test_file_uri_resolves_like_the_local_path(trained, tmp_path):
    run_cfg, data, res, model_dir = trained
    run = local_run(model_dir, tmp_path)
    uri = f"file://{run}"
    pd.testing.assert_frame_equal(runs.load_results(uri), runs.load_results(run))
    ck, note = runs.best_checkpoint(uri)
    assert ck.is_local and Path(ck.path) == run / TRIAL_A / CKPT and "best trial a" in note
    m = load_model(uri)
    assert m.info.source == str(run / TRIAL_A / CKPT) and any("best trial a" in n for n in m.info.notes)
    test = data.images[data.split.test]
    np.testing.assert_allclose(m.scores(test), load_model(model_dir).scores(test), atol=0)
    img = split_image_paths(data)[:2]
    r_uri, r_local = cli("predict", "--model", uri, *img, "--json"), cli("predict", "--model", str(run), *img, "--json")
    assert r_uri.exit_code == 0 and r_local.exit_code == 0, r_uri.output
    assert scores_of(r_uri.output) == scores_of(r_local.output)


def test_predict_on_a_cloud_sweep_run(trained, tmp_path, memory_s3):
    """The issue's case: ``tune --storage s3://bucket/sweeps`` keeps results.parquet (and sweep.json) on
    the driver, the checkpoints in the bucket, recorded by Ray as bucket paths without a scheme."""
    mem, upload = memory_s3
    run_cfg, data, res, model_dir = trained
    staged = local_run(model_dir, tmp_path / "staged")
    for t in (TRIAL_A, TRIAL_B):
        upload(staged / t, f"bucket/sweeps/run/{t}")
    driver = tmp_path / "driver" / "run"
    driver.mkdir(parents=True)
    results_frame(f"bucket/sweeps/run/{TRIAL_A}/{CKPT}", f"bucket/sweeps/run/{TRIAL_B}/{CKPT}").to_parquet(
        driver / runs.RESULTS_FILE)
    (driver / runs.SWEEP_FILE).write_text(json.dumps({"sweep": {"storage": "s3://bucket/sweeps"}}))
    ck, note = runs.best_checkpoint(driver)
    assert str(ck) == f"s3://bucket/sweeps/run/{TRIAL_A}/{CKPT}" and not ck.is_local
    img = split_image_paths(data)[:2]
    r = cli("predict", "--model", str(driver), *img, "--json")
    assert r.exit_code == 0, r.output
    want = cli("predict", "--model", str(model_dir), *img, "--json")
    assert scores_of(r.output) == scores_of(want.output)
    out = json.loads(r.output)
    assert out["model"] == f"s3://bucket/sweeps/run/{TRIAL_A}/{CKPT}" and any("best trial a" in n for n in out["notes"])
    # only the files a model is read from were copied, into the cache (the resume state stayed remote)
    cached = {p.name for p in (tmp_path / "remote-cache").rglob("*") if p.is_file()}
    assert {"model.pt", "model.json", "config.yaml"} <= cached and "epoch_state.pt" not in cached
    assert runs.fetch(ck, files=("model.pt", "model.json")) == runs.fetch(ck, files=("model.pt", "model.json"))


def test_predict_and_export_with_a_run_directory_given_as_an_s3_uri(trained, tmp_path, memory_s3):
    """The whole run directory in the bucket, its checkpoint column holding URIs (what results_frame
    now records for a cloud checkpoint: runs.checkpoint_uri)."""
    mem, upload = memory_s3
    run_cfg, data, res, model_dir = trained
    staged = local_run(model_dir, tmp_path / "staged")
    base = "s3://bucket/copied/run"
    results_frame(f"{base}/{TRIAL_A}/{CKPT}", f"{base}/{TRIAL_B}/{CKPT}").to_parquet(staged / runs.RESULTS_FILE)
    upload(staged, "bucket/copied/run")
    assert runs.run_kind(base) == "sweep" and len(runs.load_results(base)) == 2
    img = split_image_paths(data)[:2]
    r = cli("predict", "--model", base, *img, "--json")
    assert r.exit_code == 0, r.output
    assert scores_of(r.output) == scores_of(cli("predict", "--model", str(model_dir), *img, "--json").output)
    r = cli("export", "--model", base, "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["model"] == f"{base}/{TRIAL_A}/{CKPT}", r.output
    # an exported file in the bucket is copied and read like a local one
    mem.pipe_file("/bucket/exported/m.pt", (tmp_path / "m.pt").read_bytes())
    r = cli("predict", "--model", "s3://bucket/exported/m.pt", *img, "--json")
    assert r.exit_code == 0, r.output


def test_a_moved_run_directory_still_finds_its_checkpoints(trained, tmp_path, memory_s3):
    """Checkpoint paths that no longer exist are looked up inside the run directory (trial/checkpoint)."""
    mem, upload = memory_s3
    run_cfg, data, res, model_dir = trained
    staged = local_run(model_dir, tmp_path / "staged")
    results_frame(f"/gone/{TRIAL_A}/{CKPT}", f"/gone/{TRIAL_B}/{CKPT}").to_parquet(staged / runs.RESULTS_FILE)
    upload(staged, "bucket/moved/run")
    ck, _ = runs.best_checkpoint("s3://bucket/moved/run")
    assert str(ck) == f"s3://bucket/moved/run/{TRIAL_A}/{CKPT}"


def one_error_line(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def test_missing_runs_and_uris_are_one_line_errors(trained, tmp_path, memory_s3):
    run_cfg, data, res, model_dir = trained
    img = split_image_paths(data)[0]
    for missing in ("file:///no/such/run", "s3://bucket/nothing"):
        assert f"model not found: {missing}" in one_error_line(cli("predict", "--model", missing, img))
    line = one_error_line(cli("predict", "--model", "nosuchfs://x/y", img))
    assert "nosuchfs://x/y" in line and "cannot open its filesystem" in line
    # a run whose best checkpoint exists nowhere: named, with where it was looked for
    run = tmp_path / "run"
    run.mkdir()
    results_frame("s3://bucket/lost/ck", "s3://bucket/lost/ck2").to_parquet(run / runs.RESULTS_FILE)
    line = one_error_line(cli("predict", "--model", str(run), img))
    assert "s3://bucket/lost/ck" in line and "does not exist" in line
    line = one_error_line(cli("export", "--model", "s3://bucket/nothing", "--format", "onnx", "--out",
                              str(tmp_path / "x.onnx")))
    assert "model not found: s3://bucket/nothing" in line
    with pytest.raises(runs.RunNotFoundError, match="no/such"):
        load_model("file:///no/such/run")
    with pytest.raises(ConfigError, match="no results.parquet in s3://bucket/nothing"):
        runs.load_results("s3://bucket/nothing")


def test_checkpoint_uri_names_the_cloud_filesystem():
    def ck(path, kind):
        return SimpleNamespace(path=path, filesystem=SimpleNamespace(type_name=kind))

    assert runs.checkpoint_uri(ck("bucket/s/run/t/checkpoint_000001", "s3")) == "s3://bucket/s/run/t/checkpoint_000001"
    assert runs.checkpoint_uri(ck("bucket/s/ck", "gcs")) == "gs://bucket/s/ck"
    assert runs.checkpoint_uri(ck("/home/u/runs/x/ck", "local")) == "/home/u/runs/x/ck"
    assert runs.checkpoint_uri(None) is None


def test_results_schema_is_one_definition():
    """search.results re-exports the schema of raysearch.runs (the layer below model and search)."""
    from raysearch.experiment.protocol import EXPERIMENT_FILE
    from raysearch.search import results

    assert results.best_row is runs.best_row and results.load_results is runs.load_results
    assert results.CORE_COLUMNS is runs.CORE_COLUMNS and results.StopReason is runs.StopReason
    assert EXPERIMENT_FILE == runs.EXPERIMENT_FILE
