"""What a user gets from ``pip install raysearch``: the wheel, not the checkout.

The slow test builds the wheel from a copy of the package sources, installs it with ``--no-deps``
into a fresh venv under a temp dir (the dependencies come from this venv through a ``.pth`` line,
so torch & co. are not downloaded again), and runs the CLI from a working directory with no
checkout anywhere above it.  The fast tests pin the top-level API and the packaging metadata.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

import raysearch

REPO = Path(__file__).resolve().parents[1]


def test_version_and_flat_api_resolve():
    assert raysearch.__file__ is not None, "raysearch must be a regular package, not a namespace package"
    assert raysearch.__version__ == importlib.metadata.version("raysearch")
    for name in raysearch.__all__:
        assert getattr(raysearch, name) is not None, name
    assert raysearch.fit.__name__ == "fit" and raysearch.SweepConfig.__name__ == "SweepConfig"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        raysearch.nope  # noqa: B018


def test_import_is_light():
    """``import raysearch`` (and so ``raysearch --version``) must not pull in torch, Ray or Cornac."""
    code = "import sys, raysearch; raysearch.__version__; print(sorted({'torch', 'ray', 'cornac'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_search_spaces_are_package_data():
    """One copy: raysearch/search_spaces is a link to the top-level folder, found via importlib.resources."""
    from raysearch.search.space import default_space_path, spaces_dir

    link = REPO / "raysearch" / "search_spaces"
    assert link.is_symlink() and link.resolve() == (REPO / "search_spaces").resolve()
    assert spaces_dir().resolve() == (REPO / "search_spaces").resolve()
    assert default_space_path("synthetic-tiny").name == "synthetic.yaml"


def test_default_backbone_needs_no_download():
    """``raysearch train`` with no flags works offline: the default weights ship with a pip wheel."""
    from raysearch.config import TrainConfig
    from raysearch.model.backbones import create_backbone

    assert os.environ["RAYSEARCH_OFFLINE"] == "1"  # conftest: any download attempt would be an error
    cfg = TrainConfig()
    assert create_backbone(cfg.backbone, cfg.weights).name == "efficientnet_lite0"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel`` on a clean copy of the sources: no stale ``build/`` and no shared tree to race on."""
    src = tmp / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, src / f)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "search_spaces", src / "search_spaces", ignore=ignore)
    shutil.copytree(REPO / "raysearch", src / "raysearch", symlinks=True, ignore=ignore)  # keep the link
    dist = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Deprecat" not in out.stderr, out.stderr  # e.g. the old `license = {text = ...}` table
    (whl,) = dist.glob("raysearch-*.whl")
    return whl


def _fresh_venv(tmp: Path, whl: Path) -> Path:
    """A venv holding only the wheel; a .pth line lends it this venv's dependencies."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # A plain path line: the directory joins sys.path *after* the new venv's own site-packages and its
    # .pth files (this venv's editable raysearch finder among them) are not run.
    (Path(site) / "_deps_from_dev_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    "--no-index", str(whl)], check=True, timeout=180, capture_output=True)
    return venv


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_wheel_installs_and_runs_away_from_the_checkout():
    # short root: Ray's socket paths under RAY_TMPDIR must stay below ~107 characters
    tmp = Path(tempfile.mkdtemp(prefix="rs-wheel-", dir="/tmp"))
    try:
        whl = _build_wheel(tmp)
        venv = _fresh_venv(tmp, whl)
        elsewhere = tmp / "elsewhere"
        elsewhere.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS")}
        env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", RAYSEARCH_HOME=str(tmp / "home"),
                   RAY_TMPDIR=str(tmp / "ray"), RAY_AUTH_MODE="disabled", WANDB_MODE="offline",
                   MPLCONFIGDIR=str(tmp / "mpl"), RAYSEARCH_OFFLINE="1", OMP_NUM_THREADS="1")
        py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "raysearch")

        version = importlib.metadata.version("raysearch")
        assert _run([cli, "--version"], elsewhere, env, 120).strip() == f"raysearch {version}"
        out = _run([py, "-c", "import raysearch; print(raysearch.__version__); print(raysearch.__file__)"],
                   elsewhere, env, 60).split()
        assert out[0] == version
        assert Path(out[1]).resolve().is_relative_to(venv.resolve()), f"raysearch imported from {out[1]}, not the wheel"
        # no --space: the search space must come from the installed package data
        res = json.loads(_run([cli, "tune", "--dataset", "synthetic-tiny", "--trials", "2", "--epochs", "2",
                               "--no-wandb", "--json"], elsewhere, env, 360))
        assert len(res["trials"]) == 2 and not {t["stop_reason"] for t in res["trials"]} & {"error"}, res["trials"]
        assert Path(res["run_dir"]).resolve().is_relative_to(tmp.resolve()) and Path(res["best_yaml"]).is_file()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
