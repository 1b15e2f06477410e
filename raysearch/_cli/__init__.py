"""Per-stage CLI commands; see :mod:`raysearch.cli`."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

import typer


def fail(msg: str, code: int = 2) -> None:
    """Print a clear one-line error (no traceback) and exit non-zero."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` turning the project's input errors into clean CLI errors."""
    from raysearch.config import ConfigError
    from raysearch.data.format import DatasetError
    from raysearch.registry import UnknownNameError

    try:
        return fn()
    except (ConfigError, DatasetError, UnknownNameError, FileNotFoundError, ValueError) as e:
        fail(str(e))


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
