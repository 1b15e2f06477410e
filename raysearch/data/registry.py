"""The dataset registry: built-in synthetic worlds and adapters for public dumps.

``load_dataset(name)`` resolves, in order: a path to a prepared folder; a
prepared folder ``<home>/datasets/<name>``; a built-in synthetic world
(generated on first use and cached); an adapter name whose data is not
prepared yet, which is an error saying how to prepare it.

Writing a dataset folder never exposes half of one and never loses the old one:
it is built in a temp folder and swapped in by :func:`raysearch._io.replace_dir`
(old aside, new in, old deleted; an interrupted swap is undone on the next load),
under a per-name lock so two ``prepare`` runs of one name cannot interleave.

The synthetic worlds and the adapters register themselves in :data:`DATASETS` when the
``raysearch.data`` package is imported (its ``__init__``), which any import of this
module does first.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from raysearch import _io, paths
from raysearch.data.format import (INTERACTIONS_FILE, ITEMS_FILE, MANIFEST_FILE, META_FILE, Dataset, DatasetError,
                                   load_folder)
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


def dataset_dir(name: str, data_root: str | os.PathLike | None = None) -> Path:
    return paths.datasets_dir(data_root) / name


def load_dataset(name: str, data_root: str | os.PathLike | None = None, *, rehash: bool = False) -> Dataset:
    """Load a dataset by name or folder path (see module docstring for the order).

    ``rehash``: recompute the content fingerprint even if no file's size or mtime changed.
    """
    p = Path(name)
    if (p / META_FILE).is_file():
        return load_folder(p, rehash=rehash)
    folder = dataset_dir(name, data_root)
    if _io.aside_path(folder).exists():
        _recover(folder)
    if (folder / META_FILE).is_file() and not _stale_synthetic(name, folder):
        return load_folder(folder, rehash=rehash)
    if name not in DATASETS:
        _not_a_dataset(name, p, folder)  # say what is missing when it is a folder, or a file
    src = DATASETS.get(name)
    if src.kind == "synthetic":
        build_synthetic(src, folder)
        return load_folder(folder, rehash=rehash)
    hint = f" or try the built-in look-alike '{src.lookalike}'" if src.lookalike else ""
    left = _dataset_files(folder)
    if left:
        raise DatasetError(
            f"dataset {name!r}: {folder / META_FILE} is missing ({', '.join(left)} are there: deleted, or a "
            f"prepare was interrupted); prepare it again with `raysearch prepare --dataset {name} --raw DIR "
            f"--overwrite`{hint}.")
    raise DatasetError(
        f"dataset {name!r} is not prepared (no {folder / META_FILE}). Prepare it from the public dump with "
        f"`raysearch prepare --dataset {name} --raw DIR`{hint}."
    )


def _dataset_files(folder: Path) -> list[str]:
    """The parts of a prepared dataset folder that ``folder`` holds (none when it is not a folder)."""
    if not folder.is_dir():
        return []
    return [f for f in (ITEMS_FILE, INTERACTIONS_FILE, MANIFEST_FILE, "images/") if (folder / f.rstrip("/")).exists()]


def _not_a_dataset(name: str, given: Path, folder: Path) -> None:
    """For a name that is no registered dataset: raise the error saying what ``given`` (or the folder of
    that name under the data root) is missing; return when it is neither (the caller lists the names)."""
    for cand in dict.fromkeys((given, folder)):
        if cand.is_dir():
            left = _dataset_files(cand)
            if left:
                raise DatasetError(f"{cand}: not a complete dataset folder: {META_FILE} is missing ({', '.join(left)} "
                                   f"are there: it was deleted, or the folder was not fully written); write it again "
                                   f"(`raysearch prepare ... --overwrite`, or write_dataset)")
            raise DatasetError(f"{cand}: not a prepared dataset folder (no {META_FILE}, {ITEMS_FILE}, "
                               f"{INTERACTIONS_FILE}); give a dataset name ({', '.join(DATASETS.names())}) or "
                               f"a prepared folder")
        if cand.exists():
            raise DatasetError(f"{cand}: is a file, not a dataset folder; give a dataset name "
                               f"({', '.join(DATASETS.names())}) or a prepared folder")
    if os.sep in name or name.startswith("."):  # meant as a path
        raise DatasetError(f"{name}: no such dataset folder; give a dataset name ({', '.join(DATASETS.names())}) "
                           f"or a prepared folder")


def _stale_synthetic(name: str, folder: Path) -> bool:
    """A built-in world generated by an older spec/generator version (regenerated on load)."""
    import json

    from raysearch.data import synthetic

    if name not in synthetic.PRESETS:
        return False
    try:
        return not synthetic.is_current(name, json.loads((folder / META_FILE).read_text()))
    except (OSError, ValueError):
        return False  # unreadable meta.json: let load_folder report it


def _name_lock(folder: Path, *, wait: bool = True, what: str = ""):
    """The per-dataset-name lock (``<datasets>/.<name>.lock``) every writer of that folder takes."""
    return _io.file_lock(folder.parent / f".{folder.name}.lock", wait=wait, what=what)


def _recover(folder: Path) -> None:
    """Undo/finish a swap a kill interrupted.  No folder: wait for a running prepare (it is
    mid-swap) or restore the old one; a folder: drop the old copy unless a prepare holds the lock."""
    if not folder.exists():
        with _name_lock(folder):
            _io.recover_dir(folder)
        return
    try:
        with _name_lock(folder, wait=False):
            _io.recover_dir(folder)
    except _io.BusyError:
        pass


def _clean_leftovers(folder: Path) -> None:
    """With the name lock held: finish an interrupted swap, drop temp folders of killed builds."""
    _io.recover_dir(folder)
    _io.clean_stale(folder.parent)
    legacy = re.compile(rf"\.{re.escape(folder.name)}-[a-z0-9_]{{8}}")  # temp folders of older versions
    for e in folder.parent.iterdir():
        if legacy.fullmatch(e.name) and e.is_dir():
            shutil.rmtree(e, ignore_errors=True)


def _build_into(folder: Path, build: Callable[[Path], Any]) -> Any:
    """Run ``build(tmp)`` in a temp folder next to ``folder`` and swap it in; the temp folder never survives."""
    tmp = _io.temp_dir(folder.parent, folder.name)
    try:
        result = build(tmp)
        _io.replace_dir(tmp, folder)
        return result
    except OSError as e:  # a full disk, quota or file-size limit: one line naming the file as it would be named
        err = _io.write_error(getattr(e, "filename", None) or folder, e)
        if err is None:
            raise
        raise _io.relocate(err, tmp, folder) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_synthetic(src: DatasetSource, folder: Path) -> None:
    """Generate into a temp folder, then swap it in: concurrent first uses never see half a dataset."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _name_lock(folder):
        if (folder / META_FILE).is_file() and not _stale_synthetic(src.name, folder):
            return  # another process generated it while we waited
        _clean_leftovers(folder)
        _build_into(folder, src.build)


def prepare_dataset(
    name: str, raw: str | os.PathLike, *, images: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None, overwrite: bool = False, **options: Any,
) -> tuple[Path, dict[str, Any]]:
    """Run an adapter into ``<home>/datasets/<name>``; refuses to overwrite unless asked."""
    src = DATASETS.get(name)
    if src.kind != "adapter":
        raise DatasetError(f"dataset {name!r} is built in ({src.kind}); it needs no `prepare`")
    folder = dataset_dir(name, data_root)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _name_lock(folder, wait=False, what=f"dataset {name!r} (another `raysearch prepare` of it is running)"):
        _clean_leftovers(folder)
        if folder.exists() and not overwrite:
            raise DatasetError(f"{folder} already exists; pass --overwrite to replace it")
        report = _build_into(folder, lambda tmp: src.build(
            Path(raw), tmp, images_dir=Path(images) if images else None, **options))
    return folder, report
