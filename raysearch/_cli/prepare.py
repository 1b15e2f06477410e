"""``raysearch prepare`` (public dump -> canonical folder) and ``raysearch download-images``."""
from __future__ import annotations

import inspect
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from raysearch._cli import emit_json, fail, guarded, print_table
from raysearch._cli.options import DataRoot, JsonOut, PublicDataset, Raw, add
from raysearch.errors import InputError


def _print_report(folder: Any, report: dict[str, Any]) -> None:
    console = Console()
    print_table(f"prepared {report['dataset']} ({report['format']}) -> {folder}", list(report["kept"]),
                [[f"{v:,}" for v in report["kept"].values()]])
    if report["skipped"]:
        t = Table(title="skipped")
        t.add_column("what")
        t.add_column("reason")
        t.add_column("count", justify="right")
        t.add_column("examples (file:line / path)", overflow="fold")
        for s in report["skipped"]:
            t.add_row(s["what"], s["reason"], f"{s['count']:,}", "\n".join(s["examples"][:3]))
        console.print(t)
    else:
        console.print("nothing skipped")
    for note in report.get("notes", []):
        console.print(f"note: {note}")


MinRepins = Annotated[Optional[int], typer.Option(
    "--min-repins", help="Pinterest: keep only pins with more repins than this (default 10).")]


def prepare(
    dataset: PublicDataset,
    raw: Raw,
    images: Annotated[Optional[str], typer.Option(
        "--images", help="Image folder (<id>.jpg); default: inside --raw.")] = None,
    data_root: DataRoot = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an already prepared dataset.")] = False,
    min_items: Annotated[Optional[int], typer.Option(
        "--min-items", help="Amazon: labels with fewer items merge into their parent (default 10).")] = None,
    min_repins: MinRepins = None,
    json_out: JsonOut = False,
) -> None:
    """Read a public dump (exact original format) into <data-root>/datasets/NAME and report what was kept/skipped."""
    from raysearch.data.registry import DATASETS, prepare_dataset

    def run() -> tuple[Any, dict[str, Any]]:
        src = DATASETS.get(dataset)
        accepted = inspect.signature(src.build).parameters
        options: dict[str, Any] = {}
        for flag, key, value in (("--min-items", "min_items", min_items), ("--min-repins", "min_repins", min_repins)):
            if value is not None:
                if key not in accepted:
                    raise InputError(f"{flag} does not apply to dataset {dataset!r}")
                options[key] = value
        if "progress" in accepted:
            options["progress"] = not json_out
        return prepare_dataset(dataset, raw, images=images, data_root=data_root, overwrite=overwrite, **options)

    folder, report = guarded(run)
    if json_out:
        emit_json({"folder": str(folder), **report})
    else:
        _print_report(folder, report)


def download_images(
    dataset: PublicDataset,
    raw: Raw,
    out: Annotated[Optional[str], typer.Option(
        "--out", help="Where <id>.jpg go; default <raw>/images (what prepare reads).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Concurrent downloads.")] = 8,
    retries: Annotated[int, typer.Option(
        "--retries", help="Extra attempts for transient failures (timeouts, 5xx, 429).")] = 3,
    backoff: Annotated[float, typer.Option(
        "--backoff", help="Seconds before the first retry; doubles each retry.")] = 1.0,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-request timeout in seconds.")] = 30.0,
    min_repins: MinRepins = 10,
    json_out: JsonOut = False,
) -> None:
    """Fetch the images of a dump that lists image URLs (resumable: valid files already present are skipped)."""
    from pathlib import Path

    from raysearch.data import download

    def run() -> dict[str, Any]:
        cfg = download.DownloadConfig(workers=workers, retries=retries, backoff_s=backoff, timeout_s=timeout,
                                      min_repins=min_repins)
        return download.download_images(dataset, raw, out or Path(raw) / "images", cfg, progress=not json_out)

    res = guarded(run)
    if json_out:
        emit_json(res)
    else:
        cols = ("items", "present", "downloaded", "failed")
        print_table(f"download-images {dataset} -> {res['out']}", cols, [[f"{res[k]:,}" for k in cols]])
        if res["failures_file"]:
            Console().print(f"failures listed in {res['failures_file']}")
    if res["failed"] and not res["downloaded"] and not res["present"]:
        fail("no image could be downloaded (see the failures file)", code=1)


def register(app: typer.Typer) -> None:
    add(app, prepare, download_images)
