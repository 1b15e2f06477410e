"""Data commands: ``stats`` (and ``prepare``, ``download-images`` from the adapters)."""
from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from raysearch._cli import emit_json, guarded


def register(app: typer.Typer) -> None:
    @app.command()
    def stats(
        dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset name or prepared folder."),
        data_root: Optional[str] = typer.Option(None, "--data-root", help="Overrides RAYSEARCH_HOME."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        rehash: bool = typer.Option(False, "--rehash", help="Recompute the content fingerprint even if no file's "
                                    "size or mtime changed (caches of other content are then not used)."),
    ) -> None:
        """Print the paper's Table 2 row (#images, #interactions, #users, sparsity, #labels, ...)."""
        from raysearch.data import dataset_stats, load_dataset

        s = guarded(lambda: dataset_stats(load_dataset(dataset, data_root, rehash=rehash)))
        if json_out:
            emit_json(s)
            return
        t = Table(title=f"dataset {s['name']}")
        for col in ("images", "interactions", "users", "sparsity", "labels", "avg pos. labels", "gini"):
            t.add_column(col, justify="right")
        t.add_row(
            f"{s['images']:,}", f"{s['interactions']:,}", f"{s['users']:,}", f"{s['sparsity']:.3g}",
            str(s["labels"]), f"{s['avg_pos_labels']:.2f}", f"{s['gini']:.2f}",
        )
        Console().print(t)

    import importlib

    try:
        _prepare = importlib.import_module("raysearch._cli.prepare")
    except ModuleNotFoundError as e:
        if e.name != "raysearch._cli.prepare":
            raise
    else:
        _prepare.register(app)
