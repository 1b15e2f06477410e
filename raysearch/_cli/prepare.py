"""``raysearch prepare`` (public dump -> canonical folder) and ``raysearch download-images``."""
from __future__ import annotations

import inspect
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from raysearch._cli import emit_json, fail, guarded
from raysearch.errors import InputError


def _print_report(folder: Any, report: dict[str, Any]) -> None:
    console = Console()
    kept = Table(title=f"prepared {report['dataset']} ({report['format']}) -> {folder}")
    for k in report["kept"]:
        kept.add_column(k, justify="right")
    kept.add_row(*(f"{v:,}" for v in report["kept"].values()))
    console.print(kept)
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


def register(app: typer.Typer) -> None:
    @app.command()
    def prepare(
        dataset: str = typer.Option(..., "--dataset", "-d", help="Adapter: movielens, toys, clothing, pinterest."),
        raw: str = typer.Option(..., "--raw", help="Folder holding the public dump in its original format."),
        images: Optional[str] = typer.Option(None, "--images", help="Image folder (<id>.jpg); default: inside --raw."),
        data_root: Optional[str] = typer.Option(None, "--data-root", help="Overrides RAYSEARCH_HOME."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an already prepared dataset."),
        min_items: Optional[int] = typer.Option(None, "--min-items", help="Amazon: labels with fewer items merge into their parent (default 10)."),
        min_repins: Optional[int] = typer.Option(None, "--min-repins", help="Pinterest: keep pins with more repins than this (default 10)."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
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

    @app.command("download-images")
    def download_images_cmd(
        dataset: str = typer.Option(..., "--dataset", "-d", help="toys, clothing or pinterest."),
        raw: str = typer.Option(..., "--raw", help="Folder holding the public dump (the URL lists)."),
        out: Optional[str] = typer.Option(None, "--out", help="Where <id>.jpg go; default <raw>/images (what prepare reads)."),
        workers: int = typer.Option(8, "--workers", help="Concurrent downloads."),
        retries: int = typer.Option(3, "--retries", help="Extra attempts for transient failures (timeouts, 5xx, 429)."),
        backoff: float = typer.Option(1.0, "--backoff", help="Seconds before the first retry; doubles each retry."),
        timeout: float = typer.Option(30.0, "--timeout", help="Per-request timeout in seconds."),
        min_repins: int = typer.Option(10, "--min-repins", help="Pinterest: fetch only pins with more repins."),
        json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    ) -> None:
        """Fetch the images of a dump (resumable: valid files already present are skipped)."""
        from pathlib import Path

        from raysearch.data.download import DownloadConfig, download_images

        def run() -> dict[str, Any]:
            cfg = DownloadConfig(workers=workers, retries=retries, backoff_s=backoff, timeout_s=timeout, min_repins=min_repins)
            return download_images(dataset, raw, out or Path(raw) / "images", cfg, progress=not json_out)

        res = guarded(run)
        if json_out:
            emit_json(res)
        else:
            t = Table(title=f"download-images {dataset} -> {res['out']}")
            for k in ("items", "present", "downloaded", "failed"):
                t.add_column(k, justify="right")
            t.add_row(*(f"{res[k]:,}" for k in ("items", "present", "downloaded", "failed")))
            Console().print(t)
            if res["failures_file"]:
                Console().print(f"failures listed in {res['failures_file']}")
        if res["failed"] and not res["downloaded"] and not res["present"]:
            fail("no image could be downloaded (see the failures file)", code=1)
