"""The ``raysearch`` command.  Each stage contributes its commands from
``raysearch/_cli/<stage>.py`` through a ``register(app)`` function, so stages
stay independent and the entry point stays small.
"""
from __future__ import annotations

import importlib
import signal

import typer
from typer.core import TyperGroup

from raysearch._cli import STATE, configure_logging, json_mode


class _Group(TyperGroup):
    """Sees the sub-command's arguments before it runs: a ``--json`` command gets a clean stdout."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        if "--json" in [*getattr(ctx, "_protected_args", []), *ctx.args]:
            json_mode(ctx)
        return super().invoke(ctx)


app = typer.Typer(
    cls=_Group,
    name="raysearch",
    help="Ray-distributed hyperparameter search for collaborative image understanding.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



def ignore_file_size_signal() -> None:
    """Under a file-size limit (``ulimit -f``) a write past it raises SIGXFSZ, whose default action
    kills the process with a core dump (C++ writers, child processes started without Python's own
    ignore).  Ignored, the write fails with ``EFBIG`` instead, which every writer turns into one line
    naming the file and the limit (:mod:`raysearch._io`).  Inherited by child processes."""
    if hasattr(signal, "SIGXFSZ"):
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except (ValueError, OSError):  # not the main thread (an embedding program): leave it as it is
            pass


def _print_version(value: bool) -> None:
    if value:
        from raysearch import __version__

        typer.echo(f"raysearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of errors (normally one line)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log lines (-v info, -vv debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors."),
) -> None:
    """Ray-distributed hyperparameter search for collaborative image understanding."""
    ignore_file_size_signal()
    STATE.debug = debug
    ctx.call_on_close(configure_logging(verbose, quiet))
    ctx.call_on_close(lambda: setattr(STATE, "debug", False))


_STAGES = ("data", "prepare", "cf", "train", "search", "predict", "experiment")
for _stage in _STAGES:  # every stage is built: a module that fails to import is a bug, never skipped
    importlib.import_module(f"raysearch._cli.{_stage}").register(app)


def main() -> None:
    ignore_file_size_signal()
    app()


if __name__ == "__main__":
    main()
