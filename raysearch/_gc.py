"""One mechanism for a burst of imports without Python's cyclic garbage collector.

Importing torch's training stack (``torch._dynamo`` / ``torch._inductor.config``, ~870 modules)
adds ~150k long-lived objects to the ~300k a process with torch holds, and the collector makes full
(generation 2) passes over all of them while importing, or, if merely paused, soon after.  Module
objects are never garbage, so those passes find nothing.  Paused and then frozen (``gc.freeze``),
the imports cost 0.30-0.37 s less CPU per fresh trial process (``bench/bench_gc_imports.py``).
Objects frozen are never scanned again; a cycle among them that later becomes garbage is not
reclaimed, which for module-level state is the same as before.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused(freeze: bool = False) -> Iterator[None]:
    """Cyclic GC off inside the block; restored on exit (only if this block turned it off).

    ``freeze``: on exit, move every object alive to the collector's permanent generation
    (``gc.freeze``), so the full pass the block's objects would still cause later, and every full
    pass after it, skips them.  For imports, whose objects live as long as the process.
    The switch is process-wide: meant for a trial's main thread, not for overlapping use by threads.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_on:
            gc.enable()
