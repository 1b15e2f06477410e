"""raysearch: Ray-distributed hyperparameter search for collaborative image understanding.

A regular package (not a namespace package), so two checkouts on one ``sys.path`` can never
merge silently.  The flat API below is resolved lazily through module ``__getattr__`` so
``import raysearch`` (and ``raysearch --version``) does not pay for torch, Ray or Cornac::

    import raysearch
    ds = raysearch.load_dataset("synthetic-tiny")
    result = raysearch.run_sweep(raysearch.SweepConfig(dataset="synthetic-tiny", trials=2))
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _NotInstalled, version as _dist_version
from typing import TYPE_CHECKING

from raysearch._lazy import lazy_api as _lazy_api

try:  # single source: the version in pyproject.toml, as installed (wheel or editable)
    __version__ = _dist_version("raysearch")
except _NotInstalled:  # a bare checkout on sys.path, never installed
    __version__ = "0+unknown"

#: public name -> the module that defines it (imported on first attribute access).  No name here
#: may equal a submodule's (``predict``, ``train``...): importing that submodule would replace it.
_API: dict[str, str] = {
    "RunConfig": "raysearch.config",
    "load_run_config": "raysearch.config",
    "RaysearchError": "raysearch.errors",
    "load_dataset": "raysearch.data",
    "fit": "raysearch.train",
    "SweepConfig": "raysearch.search",
    "run_sweep": "raysearch.search",
    "load_space": "raysearch.search",
    "load_model": "raysearch.model.io",
}

__all__ = ["__version__", *sorted(_API)]


__getattr__, __dir__ = _lazy_api(__name__, _API)


if TYPE_CHECKING:  # static checkers and IDEs see the real objects
    from raysearch.config import RunConfig, load_run_config
    from raysearch.data import load_dataset
    from raysearch.errors import RaysearchError
    from raysearch.model.io import load_model
    from raysearch.search import SweepConfig, load_space, run_sweep
    from raysearch.train import fit
