"""``raysearch stats``: a dataset's Table 2 row (``prepare``/``download-images`` live in prepare.py)."""
from __future__ import annotations

from typing import Annotated

import typer
from raysearch._cli import emit_json, guarded, print_table
from raysearch._cli.options import DataRoot, Dataset, JsonOut, add


def stats(
    dataset: Dataset = "synthetic",
    data_root: DataRoot = None,
    json_out: JsonOut = False,
    rehash: Annotated[bool, typer.Option(
        "--rehash", help="Recompute the content fingerprint even if no file's size or mtime changed (caches of "
                         "other content are then not used).")] = False,
) -> None:
    """Print the paper's Table 2 row (#images, #interactions, #users, sparsity, #labels, ...)."""
    from raysearch.data import dataset_stats, load_dataset

    s = guarded(lambda: dataset_stats(load_dataset(dataset, data_root, rehash=rehash)))
    if json_out:
        return emit_json(s)
    print_table(f"dataset {s['name']}",
                ("images", "interactions", "users", "sparsity", "labels", "avg pos. labels", "gini"),
                [(f"{s['images']:,}", f"{s['interactions']:,}", f"{s['users']:,}", f"{s['sparsity']:.3g}",
                  s["labels"], f"{s['avg_pos_labels']:.2f}", f"{s['gini']:.2f}")])


def register(app: typer.Typer) -> None:
    add(app, stats)
