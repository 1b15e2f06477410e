"""One mechanism for a package's flat API resolved on first use (PEP 562 ``__getattr__``), so
``import raysearch``, ``import raysearch.train`` and ``import raysearch.cf`` load no torch, Ray or
Cornac until a name that needs them is touched."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_api(package: str, api: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``api`` maps a public name to its module.  A
    resolved name is stored on the package, so later look-ups skip ``__getattr__``."""

    def __getattr__(name: str) -> Any:
        mod = api.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(mod), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *api})

    return __getattr__, __dir__
