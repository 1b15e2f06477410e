"""scripts/gpu-smoke.sh: ready to run on a GPU machine, and clear about it elsewhere.

The GPU steps themselves need a GPU; here: the one-line refusal and its exit status (77, "not
run") with no GPU visible, the reasons it names, and the helpers that read its results.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-smoke.sh"


def _smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "bench" / "gpu_smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(60)
def test_without_a_gpu_it_exits_77_with_one_line():
    """CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too."""
    assert os.access(SCRIPT, os.X_OK)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "offline"}
    r = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=55, env=env, cwd="/")
    assert r.returncode == 77, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("gpu-smoke: not run: torch.cuda.is_available() is False (torch "), lines[0]
    assert torch.__version__ in lines[0]


@pytest.mark.parametrize("cuda, driver, expect", [
    (None, None, "a CPU-only torch build"),
    ("13.0", None, "no NVIDIA driver or GPU visible"),
    ("13.0", "570.133.20", "NVIDIA driver 570.133.20, this +cu130 build needs >= 580: install 2.14.1+cu128"),
    ("12.8", "570.133.20", "NVIDIA driver 570.133.20)"),
])
def test_the_refusal_names_the_reason(monkeypatch, cuda, driver, expect):
    smoke = _smoke()
    from raysearch import cluster_cuda as cc

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(cc, "driver_version", lambda: driver)
    line = smoke.cuda_unavailable()
    assert line.startswith("gpu-smoke: not run:") and "\n" not in line and expect in line, line


def test_no_refusal_when_torch_sees_a_gpu(monkeypatch):
    smoke = _smoke()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert smoke.cuda_unavailable() is None


def test_nccl_evidence_and_steady_rate(tmp_path):
    smoke = _smoke()
    logs = tmp_path / "ray" / "session_2026-12-03_11-00-00_1" / "logs"
    logs.mkdir(parents=True)
    (logs / "worker-1.err").write_text(
        "host:1:1 [0] NCCL INFO NCCL version 2.27.3+cuda12.8\n"
        "host:1:1 [0] NCCL INFO comm 0x5 rank 0 nranks 2 cudaDev 0 nvmlDev 0 busId 1000 commId 0x1 - Init COMPLETE\n")
    (logs / "worker-2.err").write_text("nothing here\n")
    assert smoke.nccl_evidence(tmp_path) == ("2.27.3+cuda12.8", 2)
    assert smoke.nccl_evidence(tmp_path / "none") == (None, 0)
    assert smoke._steady([10.0, 100.0, 110.0, 90.0]) == 100.0   # the warm-up epoch is left out
    assert smoke._steady([42.0]) == 42.0
