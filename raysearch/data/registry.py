"""The dataset registry: built-in synthetic worlds and adapters for public dumps.

``load_dataset(name)`` resolves, in order: a path to a prepared folder; a
prepared folder ``<home>/datasets/<name>``; a built-in synthetic world
(generated on first use and cached); an adapter name whose data is not
prepared yet, which is an error saying how to prepare it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from raysearch import paths
from raysearch.data.format import META_FILE, Dataset, DatasetError, load_folder
from raysearch.registry import Registry


@dataclass(frozen=True)
class DatasetSource:
    """How a named dataset comes to exist.

    kind ``synthetic``: ``build(out_dir)`` writes the canonical folder.
    kind ``adapter``: ``build(raw_dir, out_dir, images_dir=None, **options) -> dict report``
    reads the public dump in its original format.
    """

    name: str
    kind: str
    build: Callable[..., Any]
    description: str = ""
    lookalike: str | None = None  # synthetic stand-in to suggest when not prepared


DATASETS: Registry[DatasetSource] = Registry("dataset")


def register_dataset(name: str, kind: str, description: str = "", lookalike: str | None = None):
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        DATASETS.register(name, obj=DatasetSource(name, kind, fn, description, lookalike))
        return fn

    return deco


def _ensure_registered() -> None:
    # importing these modules runs their @register_dataset decorators
    from raysearch.data import synthetic  # noqa: F401
    from raysearch.data import adapters  # noqa: F401


def dataset_dir(name: str, data_root: str | os.PathLike | None = None) -> Path:
    return paths.datasets_dir(data_root) / name


def load_dataset(name: str, data_root: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name or folder path (see module docstring for the order)."""
    p = Path(name)
    if (p / META_FILE).is_file():
        return load_folder(p)
    folder = dataset_dir(name, data_root)
    if (folder / META_FILE).is_file():
        return load_folder(folder)
    _ensure_registered()
    src = DATASETS.get(name)
    if src.kind == "synthetic":
        build_synthetic(src, folder)
        return load_folder(folder)
    hint = f" or try the built-in look-alike '{src.lookalike}'" if src.lookalike else ""
    raise DatasetError(
        f"dataset {name!r} is not prepared (no {folder / META_FILE}). Prepare it from the public dump with "
        f"`raysearch prepare --dataset {name} --raw DIR`{hint}."
    )


def build_synthetic(src: DatasetSource, folder: Path) -> None:
    """Generate into a temp folder, then rename: concurrent first uses never see half a dataset."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        src.build(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / META_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def prepare_dataset(
    name: str, raw: str | os.PathLike, *, images: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None, overwrite: bool = False, **options: Any,
) -> tuple[Path, dict[str, Any]]:
    """Run an adapter into ``<home>/datasets/<name>``; refuses to overwrite unless asked."""
    _ensure_registered()
    src = DATASETS.get(name)
    if src.kind != "adapter":
        raise DatasetError(f"dataset {name!r} is built in ({src.kind}); it needs no `prepare`")
    folder = dataset_dir(name, data_root)
    if folder.exists() and not overwrite:
        raise DatasetError(f"{folder} already exists; pass --overwrite to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        report = src.build(Path(raw), tmp, images_dir=Path(images) if images else None, **options)
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, report
