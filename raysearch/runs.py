"""Run artifacts: what a sweep leaves behind and where its model is, on any filesystem.

The layer below ``model`` and ``search`` (it imports neither): the results schema of
``results.parquet`` (stop reasons, core columns), :func:`load_results` / :func:`best_row` (the
best trial by validation mAP, the one ``best.yaml``, ``predict --model RUN``, ``export``,
``experiment --from-sweep`` and ``raysearch dashboard`` all name), and the resolution of a run
directory or a checkpoint given as a local path or a URI (``file://``, ``s3://``, ``gs://``...)
through ``pyarrow.fs``.

Why here: ``model.io`` needs the best trial of a sweep and ``search`` writes the results; with
both reading one module below them, neither imports the other.

A sweep with ``--storage s3://bucket/prefix`` keeps its ``results.parquet`` on the driver but its
checkpoints in the bucket; Ray records a checkpoint as its path *inside* the filesystem
(``bucket/prefix/<name>/<trial>/checkpoint_000003``, no scheme).  :func:`best_checkpoint` finds
it on the run directory's own filesystem, on the filesystem of the sweep's storage URI
(``sweep.json``), or inside a moved/copied run directory.  :func:`fetch` copies a remote
checkpoint's files to a local cache (``<home>/cache/remote``) before ``torch.load``.
"""
from __future__ import annotations

import enum
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from raysearch.config import ConfigError, RunConfig, from_dict
from raysearch.errors import InputError, RaysearchError, short

# ------------------------------------------------------------------ the results schema

RESULTS_FILE = "results.parquet"
BEST_FILE = "best.yaml"
SWEEP_FILE = "sweep.json"   # the sweep's settings (``--storage`` among them), written by search.tune
EXPERIMENT_FILE = "experiment.parquet"  # marks a ``raysearch experiment`` output directory (experiment.protocol)


def run_kind(target: "str | os.PathLike | Location") -> str | None:
    """``"experiment"`` | ``"sweep"`` | None: what kind of run directory ``target`` is (by the files it holds)."""
    loc = locate(target)
    if loc.join(EXPERIMENT_FILE).is_file():
        return "experiment"
    if loc.join(RESULTS_FILE).is_file():
        return "sweep"
    return None


class StopReason(str, enum.Enum):
    """Why a trial ended.  ``str`` values are what ``results.parquet`` stores."""

    COMPLETED = "completed"          # ran every epoch and sent its final report
    EARLY_STOPPED = "early_stopped"  # patience on val mAP ran out before the last epoch
    ASHA_STOPPED = "asha_stopped"    # the scheduler cut it at a rung
    INTERRUPTED = "interrupted"      # the sweep stopped first (Ctrl+C, time budget); --resume reruns it
    ERROR = "error"                  # raised, or its node was lost more often than --max-failures

    def __str__(self) -> str:
        return self.value


STOP_REASONS: tuple[str, ...] = tuple(r.value for r in StopReason)
#: ran its whole schedule (ASHA did not cut it): comparable with each other, with a test mAP and final model
COMPLETE = (StopReason.COMPLETED.value, StopReason.EARLY_STOPPED.value)
#: finished trials whose best val mAP is meaningful (not cut short by the sweep or an error)
FINISHED = (*COMPLETE, StopReason.ASHA_STOPPED.value)

#: columns every results.parquet has, in order; searched parameters follow as ``section.field``
CORE_COLUMNS = ["trial_id", "method", "weighting", "best_val_map", "test_map", "epochs_run",
                "stop_reason", "wall_time_s", "train_time_s"]
#: ``node`` is the Ray node id (56 hex digits); ``host`` / ``node_ip`` say where that is (the node
#: that ran the training: for a DDP trial, its rank-0 worker's node); ``checkpoint`` is a local path,
#: a URI, or (older sweeps on cloud storage) a path inside the storage's filesystem; ``data_s`` is the
#: trial's wait for its data, ``eval_time_s`` its per-epoch validation (both outside ``train_time_s``)
EXTRA_COLUMNS = ["data_s", "eval_time_s", "retries", "resumed_from_epoch", "node", "host", "node_ip", "checkpoint", "error",
                 "config"]


def check_stop_reasons(values: Any) -> None:
    bad = set(map(str, values)) - set(STOP_REASONS)
    if bad:
        raise ValueError(f"unknown stop_reason(s) {sorted(bad)}; expected {STOP_REASONS}")


def param_columns(df: pd.DataFrame) -> list[str]:
    """Searched-parameter columns (``train.alpha``, ``cf.model`` ...)."""
    return [c for c in df.columns if c.startswith(("train.", "cf.", "split."))]


def best_row(df: pd.DataFrame) -> pd.Series | None:
    """Best trial by validation mAP only (test mAP never selects), among trials that ran their
    whole schedule (``COMPLETE``): an ASHA-stopped trial's val mAP is from fewer epochs and it has
    no test mAP, so ``best.yaml``, ``predict --model RUN`` and the dashboard all name the same
    trial.  Only if no trial completed does an ASHA-stopped one qualify; errored and interrupted
    trials never do.  Ties keep results order (stable sort)."""
    valid = df[df["best_val_map"].notna()]
    ok = valid[valid["stop_reason"].isin(COMPLETE)]
    if ok.empty:
        ok = valid[valid["stop_reason"].isin(FINISHED)]
    if ok.empty:
        return None
    return ok.sort_values("best_val_map", ascending=False, kind="stable").iloc[0]


def best_run_config(row: pd.Series) -> RunConfig:
    return from_dict(RunConfig, json.loads(row["config"]), where=f"trial {row['trial_id']}")


# ------------------------------------------------------------------ locations on any filesystem

class RunError(InputError):
    """A run directory or checkpoint is unusable (no best trial, no checkpoint...): one line naming it."""


class RunNotFoundError(RaysearchError, FileNotFoundError):
    """A run directory, checkpoint or URI does not exist: one line naming it."""

    def __str__(self) -> str:  # OSError formats (errno, strerror) tuples; ours is one message
        return str(self.args[0]) if self.args else ""


#: scheme -> ``factory(uri) -> (pyarrow FileSystem, path inside it)``, consulted before
#: ``pyarrow.fs.FileSystem.from_uri``: a filesystem pyarrow cannot build from a URI (an fsspec one,
#: a test's in-memory store) is registered here
FILESYSTEMS: dict[str, Callable[[str], tuple[Any, str]]] = {}


def is_uri(target: str | os.PathLike | Location) -> bool:
    return isinstance(target, Location) or "://" in os.fspath(target)


def _local_fs() -> Any:
    from pyarrow.fs import LocalFileSystem

    return LocalFileSystem()


@dataclass(frozen=True)
class Location:
    """A file or folder on a pyarrow filesystem: ``path`` inside ``fs``; ``scheme`` is how it was
    named (``""`` for a plain local path), so ``str()`` gives back a path or URI a user recognises."""

    fs: Any
    path: str
    scheme: str = ""

    @property
    def is_local(self) -> bool:
        from pyarrow.fs import LocalFileSystem

        return isinstance(self.fs, LocalFileSystem)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}" if self.scheme else self.path

    @property
    def name(self) -> str:
        return Path(self.path).name if self.is_local else posixpath.basename(self.path.rstrip("/"))

    def join(self, *parts: str) -> "Location":
        if self.is_local:  # pathlib's spelling, so messages name the paths they always named
            return Location(self.fs, str(Path(self.path).joinpath(*parts)), self.scheme)
        return Location(self.fs, posixpath.join(self.path.rstrip("/"), *parts), self.scheme)

    def _type(self) -> Any:
        from pyarrow.fs import FileType

        if self.is_local:  # as pathlib sees it: a relative path stays relative, a broken link is missing
            p = Path(self.path)
            return FileType.Directory if p.is_dir() else FileType.File if p.exists() else FileType.NotFound
        try:
            return self.fs.get_file_info(self.path).type
        except (OSError, ValueError) as e:  # credentials, network, a malformed path (ArrowInvalid is a ValueError)
            raise RunNotFoundError(f"{self}: cannot be read ({_first_line(e)})") from None

    def exists(self) -> bool:
        from pyarrow.fs import FileType

        return self._type() != FileType.NotFound

    def is_file(self) -> bool:
        from pyarrow.fs import FileType

        return self._type() == FileType.File

    def is_dir(self) -> bool:
        from pyarrow.fs import FileType

        return self._type() == FileType.Directory

    def read_bytes(self) -> bytes:
        if self.is_local:
            return Path(self.path).read_bytes()
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]


def locate(target: str | os.PathLike | Location) -> Location:
    """A local path or a URI as a :class:`Location`.  ``file://`` URIs are local paths; other schemes
    go through :data:`FILESYSTEMS`, then ``pyarrow.fs.FileSystem.from_uri`` (``s3://``, ``gs://``,
    ``hdfs://``...).  A filesystem that cannot be opened is one line naming the URI."""
    if isinstance(target, Location):
        return target
    s = os.fspath(target)
    if "://" not in s:
        return Location(_local_fs(), s)
    scheme = s.split("://", 1)[0].lower()
    if scheme in FILESYSTEMS:
        fs, path = FILESYSTEMS[scheme](s)
        return Location(fs, path.rstrip("/") or path, scheme)
    from pyarrow.fs import FileSystem

    try:
        fs, path = FileSystem.from_uri(s)
    except Exception as e:  # noqa: BLE001 - ArrowInvalid (unknown scheme), OSError (credentials, region)
        raise RunNotFoundError(f"{short(s)}: cannot open its filesystem ({_first_line(e)})") from None
    return Location(fs, path.rstrip("/") or path, scheme)


# ------------------------------------------------------------------ results.parquet

def load_results(run_dir: str | os.PathLike | Location) -> pd.DataFrame:
    """Read a sweep's results (a local run directory or a URI); a missing/corrupt file is an error naming it."""
    loc = locate(run_dir)
    path = loc.join(RESULTS_FILE)
    if not path.is_file():
        raise ConfigError(f"no {RESULTS_FILE} in {run_dir} (is it a `raysearch tune` run directory?)")
    try:
        df = pd.read_parquet(path.path) if loc.is_local else pd.read_parquet(path.path, filesystem=path.fs)
    except Exception as e:  # pyarrow raises several types for a truncated/corrupt file
        raise ConfigError(f"{path}: cannot read results: {e}") from None
    missing = [c for c in CORE_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}")
    return df


def has_results(target: str | os.PathLike | Location) -> bool:
    """Whether ``target`` is a sweep run directory (holds ``results.parquet``)."""
    loc = locate(target)
    return loc.is_dir() and loc.join(RESULTS_FILE).is_file()


def sweep_storage(run_dir: str | os.PathLike | Location) -> str | None:
    """The ``--storage`` the sweep ran with (``sweep.json``), None when unknown."""
    p = locate(run_dir).join(SWEEP_FILE)
    try:
        if not p.is_file():
            return None
        storage = json.loads(p.read_text()).get("sweep", {}).get("storage")
    except (RunNotFoundError, OSError, ValueError, AttributeError):
        return None
    return storage if isinstance(storage, str) and storage else None


def checkpoint_uri(checkpoint: Any) -> str | None:
    """What ``results.parquet`` records for a Ray ``Checkpoint``: its local path, or a URI for a
    checkpoint on cloud storage (Ray's ``.path`` is the path inside its filesystem, no scheme)."""
    if checkpoint is None:
        return None
    path = str(checkpoint.path)
    kind = getattr(getattr(checkpoint, "filesystem", None), "type_name", "local")
    scheme = {"s3": "s3", "gcs": "gs", "hdfs": "hdfs"}.get(kind)
    return f"{scheme}://{path.lstrip('/')}" if scheme and "://" not in path else path


def checkpoint_candidates(run: Location, checkpoint: str) -> list[Location]:
    """Where a recorded checkpoint may be, in order: a URI as it is; a bare path on the run
    directory's filesystem; on the filesystem of the sweep's storage URI (a cloud sweep's results
    sit on the driver, its checkpoints in the bucket); inside the run directory (moved or copied)."""
    out: list[Location] = []
    if "://" in checkpoint:
        try:
            out.append(locate(checkpoint))
        except RunNotFoundError:
            pass
    else:
        out.append(Location(run.fs, checkpoint, run.scheme))
        storage = sweep_storage(run)
        if storage and "://" in storage and not storage.lower().startswith("file://"):
            try:
                out.append(locate(f"{storage.split('://', 1)[0]}://{checkpoint.lstrip('/')}"))
            except RunNotFoundError:
                pass
    tail = [p for p in checkpoint.rstrip("/").split("/") if p][-2:]
    if tail:
        out.append(run.join(*tail))
    seen, uniq = set(), []
    for c in out:
        if (str(c), c.is_local) not in seen:
            seen.add((str(c), c.is_local))
            uniq.append(c)
    return uniq


def best_checkpoint(run_dir: str | os.PathLike | Location) -> tuple[Location, str]:
    """The checkpoint of the sweep's best trial (by val mAP, as ``best.yaml`` is chosen) and a note
    naming the trial."""
    run = locate(run_dir)
    row = best_row(load_results(run))
    if row is None:
        raise RunError(f"{run}: no trial finished with a validation mAP, so there is no best model")
    ck = row.get("checkpoint")
    if not isinstance(ck, str) or not ck:
        raise RunError(f"{run}: the best trial {row['trial_id']} has no checkpoint in {RESULTS_FILE}")
    cands = checkpoint_candidates(run, ck)
    for c in cands:
        if c.exists():
            return c, f"sweep {run.name}: best trial {row['trial_id']} (val mAP {float(row['best_val_map']):.4f})"
    raise RunNotFoundError(f"{run}: the best trial's checkpoint {ck} does not exist"
                           + (f" (nor {', '.join(map(str, cands[1:]))})" if len(cands) > 1 else ""))


# ------------------------------------------------------------------ remote -> local

def cache_root() -> Path:
    from raysearch import paths

    return paths.cache_dir("remote")


def fetch(loc: str | os.PathLike | Location, files: Sequence[str] | None = None,
          cache: str | os.PathLike | None = None) -> Path:
    """A local path holding ``loc``: itself when it is local; else a copy in the cache (a file, or a
    folder with ``files`` of it, all of it when None) through ``pyarrow.fs.copy_files``.

    The cache entry is keyed by the URI and the size + mtime of every copied file, so a changed
    remote checkpoint is fetched again and an unchanged one is not; entries appear whole (copied to
    a temporary folder, then renamed)."""
    loc = locate(loc)
    if loc.is_local:
        return Path(loc.path)
    from pyarrow.fs import FileSelector, FileType, LocalFileSystem, copy_files

    if not loc.exists():
        raise RunNotFoundError(f"{loc}: does not exist")
    if loc.is_file():
        infos = [loc.fs.get_file_info(loc.path)]
        rels = [loc.name]
    else:
        if files is None:
            infos = [i for i in loc.fs.get_file_info(FileSelector(loc.path, recursive=True)) if i.type == FileType.File]
        else:
            infos = [i for i in loc.fs.get_file_info([loc.join(f).path for f in files]) if i.type == FileType.File]
        base = loc.path.rstrip("/") + "/"
        rels = [i.path[len(base):] if i.path.startswith(base) else posixpath.basename(i.path) for i in infos]
    key = hashlib.sha256(json.dumps([str(loc), sorted((r, i.size, i.mtime_ns) for r, i in zip(rels, infos))],
                                    default=str).encode()).hexdigest()[:20]
    root = Path(cache) if cache is not None else cache_root()
    dest = root / key / (loc.name or "root")
    if (root / key / ".complete").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        local = LocalFileSystem()
        target = tmp / (loc.name or "root")
        if loc.is_file():
            copy_files(loc.path, str(target), source_filesystem=loc.fs, destination_filesystem=local)
        else:
            target.mkdir()
            for rel, info in zip(rels, infos):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                copy_files(info.path, str(target / rel), source_filesystem=loc.fs, destination_filesystem=local)
        (tmp / ".complete").write_text(str(loc))
        try:
            os.rename(tmp, root / key)
        except OSError:  # another process fetched the same entry first: use theirs
            if not (root / key / ".complete").is_file():
                raise
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, RaysearchError):
            raise
        raise RunNotFoundError(f"{loc}: cannot be copied to {root} ({_first_line(e)})") from None
    shutil.rmtree(tmp, ignore_errors=True)
    return dest
