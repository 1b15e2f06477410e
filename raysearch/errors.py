"""The one exception base of raysearch, and the cap on values echoed in error messages.

Why one base: the CLI turns exactly these (plus I/O errors) into a one-line error; any
other exception is a bug and keeps its traceback.  Subclasses keep the builtin parent
they always had (``ValueError``, ``KeyError``, ``FileNotFoundError``), so callers that
catch those keep working.
"""
from __future__ import annotations

from typing import Any

#: longest echo of a user-supplied value in an error message (a YAML alias bomb or a
#: 10 MB cell must not become a 300 MB error line)
MAX_ECHO = 200


class RaysearchError(Exception):
    """Bad input or an unusable environment, with a message meant for the user (one line)."""


class InputError(RaysearchError, ValueError):
    """A bad value given by the user (a flag, a config key, a file's content)."""


class RayStartError(RaysearchError, RuntimeError):
    """Ray could not be started or joined (a loaded machine, a wrong ``--address``): the cause in one line."""


def short(value: Any, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` capped to ``limit`` characters (with the full length said)."""
    try:
        r = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        r = f"<{type(value).__name__}>"
    if len(r) <= limit:
        return r
    return f"{r[:limit]}... ({len(r):,} characters)"
