"""Per-stage CLI commands; see :mod:`raysearch.cli`.

Errors: :func:`guarded` turns the project's own errors (:class:`~raysearch.errors.RaysearchError`)
and I/O errors into one line on stderr; anything else is a bug and keeps its traceback.
``raysearch --debug`` shows the traceback of the one-line errors too.
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Any, Callable, Iterable, NoReturn, Sequence

import typer

#: most characters of one error line (a message built from a huge value must stay readable)
MAX_LINE = 2000


class _State:
    debug = False
    json_stdout: Any = None  # the real stdout while a --json command runs (its own stdout goes to stderr)


STATE = _State()


def one_line(msg: str, limit: int = MAX_LINE) -> str:
    """Collapse a message to one line of at most ``limit`` characters."""
    s = " ".join(str(msg).split())
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s):,} characters)"


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print a clear error (no traceback) and exit non-zero.

    One line per line of ``msg`` (a caller listing distinct errors may pass several),
    each capped at :data:`MAX_LINE` characters.
    """
    lines = [one_line(l) for l in str(msg).strip().splitlines() if l.strip()] or ["(no message)"]
    typer.secho("error: " + "\n".join(lines), fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def describe(e: BaseException) -> str:
    """The user-facing text of an expected error: our own message, or ``file: reason`` for I/O."""
    from raysearch.errors import RaysearchError

    if isinstance(e, OSError) and not isinstance(e, RaysearchError) and e.strerror:
        where = e.filename if e.filename is not None else ""
        return f"{where}: {e.strerror}" if where else e.strerror
    if isinstance(e, KeyError) and not isinstance(e, RaysearchError) and e.args:
        return str(e.args[0])
    return str(e) or type(e).__name__


def expected_errors() -> tuple[type[BaseException], ...]:
    """What :func:`guarded` reports in one line: the project's errors and I/O errors."""
    from raysearch.errors import RaysearchError

    return (RaysearchError, OSError)


def given_flags(fields: dict[str, str] | None = None) -> frozenset[str] | None:
    """The config fields the command line really set (a ``--resume`` compares these exactly, so
    ``--dataset synthetic`` contradicts a saved run although it is the default); ``fields`` maps a
    parameter to its field where the names differ.  typer vendors click, so its context and
    ParameterSource come from there; None (defaults-only comparison) if that changes."""
    try:
        from typer._click.core import ParameterSource
        from typer._click.globals import get_current_context
    except ImportError:
        return None
    ctx = get_current_context(silent=True)
    if ctx is None:
        return None
    fields = fields or {}
    return frozenset(fields.get(p, p) for p in ctx.params if ctx.get_parameter_source(p) == ParameterSource.COMMANDLINE)


def guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` turning the project's input errors and I/O errors into clean CLI errors.

    A plain ``ValueError``/``TypeError`` is not caught: it means a bug, and its
    traceback is what is needed to fix it.
    """
    try:
        return fn()
    except expected_errors() as e:
        if STATE.debug:
            raise
        fail(one_line(describe(e)))


def checked(fn: Callable[[], Any]) -> Any:
    """Like :func:`guarded` for a pure validation call whose ``ValueError`` means bad input.

    Only for checks that run before any work (e.g. a method's stage plan for the given
    epochs), never around training or I/O.
    """
    try:
        return fn()
    except ValueError as e:
        if STATE.debug:
            raise
        fail(one_line(describe(e)))


def emit_json(obj: Any) -> None:
    """Write ``obj`` as the one JSON document on stdout (see :func:`json_mode`)."""
    out = STATE.json_stdout or sys.stdout
    out.write(json.dumps(obj, indent=2, default=str) + "\n")
    out.flush()


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, left: int = 0) -> None:
    """A table on stdout: the first ``left`` columns left-aligned (names), the others right-aligned (numbers)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i < left else "right")
    for r in rows:
        t.add_row(*map(str, r))
    Console().print(t)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it per command)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(verbose: int = 0, quiet: bool = False) -> Callable[[], None]:
    """The ``raysearch`` logger on stderr: warnings by default, ``-v`` info, ``-vv`` debug, ``-q`` errors only.

    Returns a function restoring the previous logger state (the CLI calls it when the
    command ends, so an embedding program or a test session is left as it was).
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logger = logging.getLogger("raysearch")
    before = (logger.level, logger.propagate)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]

    return restore


def json_mode(ctx: Any) -> None:
    """For a ``--json`` command: everything written to stdout goes to stderr, except the JSON.

    Libraries print to stdout (progress lines, banners); a ``--json`` consumer must read
    the JSON document alone.  Restored when the command ends.
    """
    if STATE.json_stdout is not None:
        return
    real = sys.stdout
    STATE.json_stdout = real
    sys.stdout = sys.stderr

    def restore() -> None:
        sys.stdout = real
        STATE.json_stdout = None

    ctx.call_on_close(restore)
