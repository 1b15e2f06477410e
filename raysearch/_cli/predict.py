"""``raysearch predict`` (labels for new images; Ray Data batch mode) and ``raysearch export``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from raysearch._cli import emit_json, fail, guarded
from raysearch._cli.options import Address, DataRoot, Dataset, JsonOut, ModelPath, add

BATCH_THRESHOLD = 2000  # images: above this (or with --address) predict runs on Ray Data

Images = Annotated[Optional[List[str]], typer.Argument(help="Image files and/or folders (walked recursively).")]
TopK = Annotated[int, typer.Option("--top-k", "-k", help="Labels with the highest scores to show per image.")]
Threshold = Annotated[Optional[float], typer.Option(
    "--threshold", help="One cut for every label (default: the model's per-class thresholds, chosen on "
                        "validation to maximise F1).")]
PredOut = Annotated[Optional[str], typer.Option("--out", "-o", help="Write the table: FILE with suffix {out_formats}.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")]
Split = Annotated[str, typer.Option("--split", help="With --dataset: train | val | test | all.")]
Batch = Annotated[Optional[bool], typer.Option(
    "--batch/--no-batch", help=f"Ray Data batch inference (default: on with --address or more than "
                               f"{BATCH_THRESHOLD} images).")]
Workers = Annotated[int, typer.Option("--workers", help="Batch mode: Ray Data actors (one model each).")]
CpusPerWorker = Annotated[float, typer.Option("--cpus-per-worker", help="Batch mode: CPUs per actor.")]
GpusPerWorker = Annotated[float, typer.Option("--gpus-per-worker", help="Batch mode: GPUs per actor.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")]


def _dataset_paths(pred, dataset: str, split: str, data_root: Optional[str], console: Console):
    """Image paths of a dataset split (the model's own split config), after checking the model fits."""
    import numpy as np

    from raysearch.data.registry import load_dataset
    from raysearch.data.splits import make_split
    from raysearch.errors import InputError
    from raysearch.model.io import check_compatible

    ds = load_dataset(dataset, data_root)
    for w in check_compatible(pred.info, dataset=ds):
        console.print(f"[yellow]warning:[/] {w}")
    if split == "all":
        idx = np.arange(ds.n_items)
    else:
        run = pred.info.run
        if run is None:
            raise InputError(f"--split {split}: model {pred.info.source} carries no split config (an exported file); "
                             f"use --split all or give image paths")
        idx = getattr(make_split(ds, run.split), split)
    return [ds.image_path(int(i)) for i in idx], ds.items["item_id"].to_numpy()[idx]


def _check_out_free(out: Optional[str], overwrite: bool, shards: bool = False) -> None:
    """An output the user names is never replaced silently: refuse before any work.  ``shards``:
    batch prediction also writes ``<out>.shards/``."""
    if out is None:
        return
    if Path(out).is_dir():
        fail(f"--out {out} is a folder; name a file")
    if overwrite:
        return
    from raysearch.predict import shards_path

    taken = [p for p in (Path(out), *([shards_path(out)] if shards else [])) if p.exists()]
    if taken:
        fail(f"--out {out}: {taken[0]} already exists; pass --overwrite to replace it")


def _check_args(images, dataset, split: str, top_k: int, workers: int, out: Optional[str]) -> None:
    from raysearch.predict import OUT_FORMATS

    if top_k < 1:
        fail(f"--top-k must be >= 1, got {top_k}")
    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    if out is not None and Path(out).suffix.lower() not in OUT_FORMATS:
        fail(f"--out {out}: unknown format {Path(out).suffix or '(no suffix)'!r}; use {', '.join(OUT_FORMATS)}")
    if split not in ("train", "val", "test", "all"):
        fail(f"--split must be train, val, test or all, got {split!r}")
    if bool(images) == bool(dataset):
        fail("give image files/folders, or --dataset NAME (not both)")


def predict(
    images: Images = None, model: ModelPath = ..., top_k: TopK = 3, threshold: Threshold = None,
    out: PredOut = None, dataset: Dataset = None, split: Split = "test", batch: Batch = None,
    workers: Workers = 2, cpus_per_worker: CpusPerWorker = 1.0, gpus_per_worker: GpusPerWorker = 0.0,
    batch_size: BatchSize = 64, address: Address = None, data_root: DataRoot = None, json_out: JsonOut = False,
    overwrite: Overwrite = False,
) -> None:
    """Label new images with a trained model: top-k scores and the labels above threshold.

    Give image files/folders, or --dataset to score a dataset split (checked against the model's dataset).
    """
    from raysearch.predict import collect_images, load_predictor, predict as run_predict, predict_ray

    console = Console(stderr=True)
    _check_args(images, dataset, split, top_k, workers, out)
    _check_out_free(out, overwrite)
    pred = guarded(lambda: load_predictor(model, data_root=data_root))
    if dataset:
        paths, item_ids = guarded(lambda: _dataset_paths(pred, dataset, split, data_root, console))
        ignored = []
    else:
        paths, ignored = guarded(lambda: collect_images(images))
        item_ids = None
    if not paths:
        fail(f"no images found in {', '.join(images or [])}"
             + (f" ({len(ignored)} file(s) without an image suffix ignored)" if ignored else ""))
    use_batch = batch if batch is not None else (address is not None or len(paths) > BATCH_THRESHOLD)
    if use_batch and out is None:
        fail(f"batch mode writes Parquet shards and a merged file: pass --out FILE ({len(paths)} images)")
    if use_batch:
        _check_out_free(out, overwrite, shards=True)
        res = guarded(lambda: predict_ray(pred, paths=paths, out=out, workers=workers, batch_size=batch_size,
                                           top_k=top_k, threshold=threshold, address=address,
                                           cpus_per_worker=cpus_per_worker, num_gpus_per_worker=gpus_per_worker))
    else:
        res = guarded(lambda: run_predict(pred, paths=paths, top_k=top_k, threshold=threshold,
                                          batch_size=batch_size, progress=not json_out and len(paths) > 256))
    res.ignored = [str(p) for p in ignored]
    if item_ids is not None:
        by_path = dict(zip(map(str, paths), item_ids))
        res.table.insert(0, "item_id", [by_path[p] for p in res.table["image"]])
    if out is not None and not use_batch:
        from raysearch.predict import write_predictions

        guarded(lambda: write_predictions(res.table, out))
    if json_out:
        rows = [{"image": r["image"], **({"item_id": r["item_id"]} if "item_id" in r else {}),
                 "labels": list(r["labels"]),
                 "top": [{"label": lb, "score": float(s)} for lb, s in zip(r["top_labels"], r["top_scores"])]}
                for r in res.table.to_dict("records")]
        return emit_json({**res.summary(), "out": out, "predictions": rows})
    _print_predictions(res, top_k, out, use_batch, console)


def _print_predictions(res, top_k: int, out: Optional[str], use_batch: bool, console: Console) -> None:
    summary = res.summary()
    for n in res.info.notes:
        console.print(f"[yellow]note:[/] {n}")
    tab = Table(title=f"{res.info.dataset} model ({res.info.backbone}, {res.info.image_size}px): "
                      f"thresholds {res.threshold_source}")
    for c in ("image", "labels", f"top {top_k}"):
        tab.add_column(c)
    shown = res.table.head(50)
    for r in shown.to_dict("records"):
        tab.add_row(Path(r["image"]).name, ", ".join(r["labels"]) or "-",
                    "  ".join(f"{lb} {s:.2f}" for lb, s in zip(r["top_labels"], r["top_scores"])))
    Console().print(tab)
    if len(res.table) > len(shown):
        console.print(f"... {len(res.table) - len(shown)} more rows" + (f" in {out}" if out else ""))
    rate = summary["images_per_s"]
    console.print(f"{len(res.table)} image(s) scored in {res.wall_time_s:.1f}s"
                  + (f" ({rate:.1f} images/s)" if rate else "")
                  + (f"; written to {out}" if out else "")
                  + (f"; {summary['n_shards']} shard(s) in {summary['shards']}" if use_batch else ""))
    if res.skipped:
        console.print(f"[yellow]skipped {len(res.skipped)} unreadable image(s):[/] "
                      + "; ".join(f"{p}: {r}" for p, r in res.skipped[:10])
                      + (" ..." if len(res.skipped) > 10 else ""))
    if res.ignored:
        console.print(f"ignored {len(res.ignored)} file(s) without an image suffix: "
                      + ", ".join(res.ignored[:5]) + (" ..." if len(res.ignored) > 5 else ""))


def export(
    model: ModelPath = ...,
    fmt: Annotated[str, typer.Option("--format", "-f", help="{export_formats}.")] = ...,
    out: Annotated[str, typer.Option("--out", "-o", help="File to write (e.g. model.pt / model.onnx).")] = ...,
    data_root: DataRoot = None,
    json_out: JsonOut = False,
    overwrite: Overwrite = False,
) -> None:
    """Export the classification path (uint8 images -> scores) for serving, verified against PyTorch.

    Vocabulary, image size, normalisation and thresholds are embedded; scores match within 1e-4."""
    from raysearch.export import EXPORT_FORMATS, export_model
    from raysearch.model.io import load_model

    if fmt not in EXPORT_FORMATS:
        fail(f"--format must be one of {', '.join(EXPORT_FORMATS.names())}, got {fmt!r}")
    suffix = EXPORT_FORMATS.get(fmt).suffix
    if suffix and Path(out).suffix.lower() != suffix:
        fail(f"--out {out}: an {fmt.upper() if fmt == 'onnx' else fmt} export must end in {suffix}")
    _check_out_free(out, overwrite)
    loaded = guarded(lambda: load_model(model, data_root=data_root))
    rep = guarded(lambda: export_model(loaded, fmt, out))
    res = {"model": loaded.info.source, "format": rep.format, "out": str(rep.path), "bytes": rep.bytes,
           "max_abs_diff": rep.max_abs_diff, "labels": loaded.info.n_labels, "image_size": loaded.info.image_size,
           "notes": loaded.info.notes}
    if json_out:
        return emit_json(res)
    for n in loaded.info.notes:
        Console(stderr=True).print(f"[yellow]note:[/] {n}")
    Console().print(f"exported {loaded.info.backbone} ({loaded.info.n_labels} labels, {loaded.info.image_size}px) "
                    f"as {fmt} to {rep.path} ({rep.bytes / 1e6:.1f} MB); max |score - PyTorch| = {rep.max_abs_diff:.1e}")


def register(app: typer.Typer) -> None:
    add(app, predict, export)
