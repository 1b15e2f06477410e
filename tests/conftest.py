"""Test-session setup: everything self-contained (no home dir, no network, offline W&B).

Ray is started once per session (``ray_session``), sized explicitly: asking for
more CPUs than exist hangs instead of failing.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from raysearch._ray_compat import TRAIN_HEALTH_CHECK_ENV, temp_dir_init_kwargs

_TMP = Path(tempfile.mkdtemp(prefix="raysearch-tests-"))
os.environ["RAYSEARCH_HOME"] = str(_TMP / "home")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ["RAYSEARCH_OFFLINE"] = "1"  # never try a weights download from tests
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TMPDIR", str(_TMP / "ray"))
os.environ.setdefault("MPLCONFIGDIR", str(_TMP / "mpl"))
os.environ.setdefault(TRAIN_HEALTH_CHECK_ENV, "0.1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)


def _remove_session_tmp() -> None:
    """Remove the session's temp tree (Ray logs, homes, spill files: tens of MB per run); every
    run used to leave one behind, and CI machines have little disk.  Registered before any Ray
    start, so it runs after Ray's own exit handler (atexit is last-in, first-out).
    RAYSEARCH_KEEP_TEST_TMP=1 keeps it for debugging."""
    if os.environ.get("RAYSEARCH_KEEP_TEST_TMP") == "1":
        print(f"raysearch test temp kept: {_TMP}")
        return
    shutil.rmtree(_TMP, ignore_errors=True)


atexit.register(_remove_session_tmp)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def home() -> Path:
    """The session's RAYSEARCH_HOME (a temp dir)."""
    return Path(os.environ["RAYSEARCH_HOME"])


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
            configure_logging=False, **temp_dir_init_kwargs(os.environ["RAY_TMPDIR"]),
        )
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RAYSEARCH_REAL_DATA") == "1" and SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason="real data is opt-in: set RAYSEARCH_REAL_DATA=1 with ../shared/data present")
    for item in items:
        if "real_data" in item.keywords:
            item.add_marker(skip)
