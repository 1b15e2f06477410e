"""Secrets stay in the process that needs them: a W&B key set for a sweep is written to no file
(Ray's logs, the run directory, RAYSEARCH_HOME), and its hand-off file is gone when the sweep ends."""
from __future__ import annotations

import json
import os
import stat
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from raysearch.search import _wandb_callback as _wcb
from raysearch.search.tracking import offline_runs, wandb_mode
from raysearch.search.tune import SweepConfig, run_sweep

pytestmark = [pytest.mark.slow]

SPACE = {
    "base": {
        "train": {"method": "mtl", "backbone": "tiny_cnn", "weights": "none", "image_size": 16, "epochs": 2,
                  "batch_size": 32, "patience": 2},
        "cf": {"model": "vaecf", "epochs": 2, "dim": 8, "hidden": [16]},
    },
    "params": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
}


def _files_containing(needle: bytes, *roots: Path) -> list[str]:
    """Every regular file under ``roots`` whose bytes contain ``needle`` (sockets, FIFOs and files
    removed mid-walk are skipped)."""
    hits = set()  # roots may nest (the session folder is under RAY_TMPDIR)
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                try:
                    if not stat.S_ISREG(os.lstat(p).st_mode):
                        continue
                    with open(p, "rb") as f:
                        if needle in f.read():
                            hits.add(os.path.realpath(p))
                except (FileNotFoundError, PermissionError):
                    continue
    return sorted(hits)


@pytest.mark.timeout(300)
def test_wandb_key_is_written_to_no_file(ray_session, tmp_path, monkeypatch, home):
    key = f"SENTINEL{uuid.uuid4().hex}"  # 40 characters, like a real key
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_MODE", "offline")  # a key, but never the network
    assert wandb_mode() == "offline"
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # where the hand-off file lives
    written, write = [], _wcb.write_key_file

    def record(k: str) -> str:
        written.append(write(k))
        return written[-1]

    monkeypatch.setattr(_wcb, "write_key_file", record)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    res = run_sweep(SweepConfig(dataset="synthetic-tiny", space=str(space), trials=2, max_concurrent=1,
                                scheduler="none", storage=str(tmp_path / "runs"), name="secret", seed=0))
    assert len(res.results) == 2
    assert len(offline_runs(res.run_dir)) == 2  # the W&B runs were really logged
    ray_tmp = Path(os.environ["RAY_TMPDIR"])
    session = Path(ray_session._private.worker._global_node.get_session_dir_path())
    roots = [ray_tmp, session, res.run_dir, tmp_path, home]
    hits = _files_containing(key.encode(), *roots)
    assert not hits, f"the W&B key was written to: {json.dumps(hits, indent=1)}"
    # the actors got the key through one private file, removed when the sweep ended
    assert len(written) == 1 and not list(private_tmp.iterdir())


@pytest.mark.timeout(120)
def test_logging_actor_reads_the_key_file_on_its_node(ray_session, tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    key = f"SENTINEL{uuid.uuid4().hex}"
    path = _wcb.write_key_file(key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert _wcb.WANDB_ENV_VAR not in os.environ
    actor = ray.remote(num_cpus=0)(_wcb._Actor).remote(key_file=path)
    try:
        def env_key(_self):  # a local function: pickled by value for the actor's process
            return os.environ.get("WANDB_API_KEY")

        assert ray.get(actor.__ray_call__.remote(env_key), timeout=60) == key
    finally:
        ray.kill(actor)
