"""``raysearch._gc.gc_paused``: the collector is off inside, restored after, and a trial's warm-up
imports run without full collections (which a plain import of the same modules does trigger)."""
from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from raysearch._gc import gc_paused

COUNT_FULL = """
import gc
full = []
gc.callbacks.append(lambda phase, info: full.append(1) if phase == "start" and info["generation"] == 2 else None)
{body}
print(len(full), gc.isenabled())
"""


def test_off_inside_and_restored_after_even_on_error():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_leaves_a_collector_someone_else_turned_off_off():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def _full_collections(body: str) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-c", COUNT_FULL.format(body=body)], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    return int(out[0]), out[1]


def test_warm_up_imports_run_without_full_collections():
    plain, _ = _full_collections("import torch, torch._inductor.config")
    warm, enabled = _full_collections("from raysearch.search.shared import warm_trial_imports\nwarm_trial_imports()")
    assert plain >= 1  # the premise: this import burst does trigger full passes
    assert warm == 0 and enabled == "True"
