"""``raysearch._gc.gc_paused``: the collector is off inside, restored after, frozen on request, and
a trial's warm-up imports cause no full collection, neither while importing nor in the allocations
after (which a plain import of the same modules, and a mere pause, do)."""
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
import raysearch.search.shared
n = len(full)
{body}
# full passes during the body; objects a later full pass would scan; collector on
print(len(full) - n, len(gc.get_objects()), gc.isenabled())
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


def test_freeze_moves_what_is_alive_out_of_later_collections():
    gc.unfreeze()
    try:
        with gc_paused():
            pass
        assert gc.get_freeze_count() == 0
        with gc_paused(freeze=True):
            kept = [{"i": i} for i in range(1000)]  # noqa: F841  (alive at the block's end)
        assert gc.get_freeze_count() >= 1000 and gc.isenabled()
    finally:
        gc.unfreeze()


def _full_collections(body: str) -> tuple[int, int, str]:
    out = subprocess.run([sys.executable, "-c", COUNT_FULL.format(body=body)], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    return int(out[0]), int(out[1]), out[2]


def test_warm_up_imports_run_without_full_collections():
    plain, scanned_plain, _ = _full_collections("import torch, torch._inductor.config")
    if plain == 0:  # an interpreter whose collector makes no full passes here: nothing to save
        pytest.skip("importing torch._inductor.config triggers no full collection on this Python")
    warm, scanned, enabled = _full_collections(
        "from raysearch.search.shared import warm_trial_imports\nwarm_trial_imports()")
    assert warm == 0 and enabled == "True"
    # frozen: the full pass a mere pause would only defer has (almost) nothing left to scan
    assert scanned < scanned_plain / 20, (scanned, scanned_plain)
