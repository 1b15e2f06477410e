"""Progress bars: the one place a rich ``Progress`` is built.

Always on stderr, so stdout stays clean for ``--json``; disabled bars cost nothing.
``progress_bar`` gives a shared multi-task bar (adapters read several files under one),
``tracked`` advances it from an iterator in chunks, ``bar`` is a single task with
``advance()`` (image cache, training epochs).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")


@contextmanager
def progress_bar(enabled: bool, *, transient: bool = False) -> Iterator[Any]:
    """A rich ``Progress`` on stderr, or ``None`` when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=transient) as p:
        yield p


def tracked(it: Iterable[T], progress: Any, description: str, total: int | None = None) -> Iterator[T]:
    """Iterate, advancing a task of ``progress`` in chunks (per-item updates would cost more than parsing)."""
    if progress is None:
        yield from it
        return
    task = progress.add_task(description, total=total)
    pending = done = 0
    for x in it:
        yield x
        pending += 1
        if pending >= 2048:
            progress.advance(task, pending)
            done, pending = done + pending, 0
    progress.advance(task, pending)
    if total is None:
        progress.update(task, total=done + pending)


class Bar:
    """One task of a progress bar; ``advance`` is a no-op when there is no bar."""

    def __init__(self, progress: Any, description: str, total: int | None) -> None:
        self._p = progress
        self._task = progress.add_task(description, total=total) if progress is not None else None

    def advance(self, n: int = 1) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)


@contextmanager
def bar(enabled: bool, description: str, total: int | None, *, transient: bool = False) -> Iterator[Bar]:
    """A single-task bar (``with bar(on, "caching", n) as b: ... b.advance()``)."""
    with progress_bar(enabled, transient=transient) as p:
        yield Bar(p, description, total)
