"""Where raysearch keeps prepared datasets, caches and runs.

``RAYSEARCH_HOME`` (default ``~/.raysearch``) is the root; every command's
``--data-root`` overrides it so tests and CI never touch the user's home.
"""
from __future__ import annotations

import os
from pathlib import Path


def home(override: str | os.PathLike | None = None) -> Path:
    if override is not None:
        return Path(override).expanduser().resolve()
    return Path(os.environ.get("RAYSEARCH_HOME", "~/.raysearch")).expanduser().resolve()


def datasets_dir(root: str | os.PathLike | None = None) -> Path:
    """Prepared canonical dataset folders live in ``<home>/datasets/<name>``."""
    return home(root) / "datasets"


def cache_dir(kind: str, root: str | os.PathLike | None = None) -> Path:
    """Derived, rebuildable artefacts: ``images``, ``cf``, ``features`` ..."""
    p = home(root) / "cache" / kind
    p.mkdir(parents=True, exist_ok=True)
    return p


def runs_dir(root: str | os.PathLike | None = None) -> Path:
    return home(root) / "runs"
