"""The ``raysearch`` command.  Each stage contributes its commands from
``raysearch/_cli/<stage>.py`` through a ``register(app)`` function, so stages
stay independent and the entry point stays small.
"""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="raysearch",
    help="Ray-distributed hyperparameter search for collaborative image understanding.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def _root() -> None:
    """Ray-distributed hyperparameter search for collaborative image understanding."""


_STAGES = ("data", "cf", "train", "search")
for _stage in _STAGES:
    try:
        _mod = importlib.import_module(f"raysearch._cli.{_stage}")
    except ModuleNotFoundError as e:  # a stage not yet built: its commands are simply absent
        if e.name != f"raysearch._cli.{_stage}":
            raise
        continue
    _mod.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
