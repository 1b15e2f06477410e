"""Apply a trained model to new images: the Python API behind ``raysearch predict``.

:func:`load_predictor` opens any model form (model directory, sweep run directory, legacy
checkpoint, exported TorchScript/ONNX file) behind one interface: ``.info`` (vocabulary,
image size, thresholds) and ``.scores(uint8 images)``.  Images are decoded with the training
pipeline's own :func:`raysearch.data.images.decode_image` (by content, EXIF orientation, RGB,
shorter side -> size, centre crop), so a dataset image scores exactly as ``fit`` evaluated it.
An unreadable image is a counted, named skip (``Predictions.skipped``), never a crash.

Two paths, same output table:

* :func:`predict` - in-process, threads decode, one model: for a handful to a few thousand images;
* :func:`predict_ray` - Ray Data: ``from_items(paths)`` -> ``map_batches(_BatchScorer)`` with an
  actor pool (the model is loaded once per actor from bytes shipped by the driver, so workers
  need no model file, only the images) -> Parquet shards -> one merged file.  Spreads over a
  cluster's CPUs/GPUs with ``address``; Ray Data shows progress.
"""
from __future__ import annotations

import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
import pandas as pd
import torch

from raysearch.errors import InputError
from raysearch.model.io import LoadedModel, ModelInfo, build_scoring_model, load_model

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
OUT_FORMATS = (".csv", ".parquet", ".jsonl")
SCORE_PREFIX = "score:"


class Predictor(Protocol):
    info: ModelInfo

    def scores(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray: ...

    def payload(self) -> dict[str, Any]: ...


class TorchPredictor:
    """A PyTorch model (from :func:`raysearch.model.io.load_model`)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded, self.info = loaded, loaded.info

    def scores(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return self.loaded.scores(images, batch_size)

    def check(self, **expect: Any) -> list[str]:
        return self.loaded.check(**expect) or []

    def payload(self) -> dict[str, Any]:
        buf = io.BytesIO()
        sd = self.loaded.module.state_dict()
        torch.save(sd, buf)
        return {"kind": "torch", "data": buf.getvalue(), "info": self.info.to_json(), "source": self.info.source}


def load_predictor(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> Predictor:
    """Any model form -> a predictor (exported files by content/suffix, everything else via load_model).

    ``path`` may be a URI (``file://``, ``s3://``, ``gs://``: :mod:`raysearch.runs`); a remote file is
    copied to the local cache first, a remote folder (model or sweep run directory) is read by load_model."""
    from raysearch import runs
    from raysearch.export import exported_kind, load_exported

    if runs.is_uri(path):
        loc = runs.locate(path)
        if loc.is_file():
            path = runs.fetch(loc)
    if exported_kind(path) is not None:
        return load_exported(path)
    return TorchPredictor(load_model(path, data_root=data_root))


def predictor_from_payload(payload: dict[str, Any]) -> Predictor:
    """Rebuild a predictor from :meth:`Predictor.payload` (bytes only: what Ray ships to actors)."""
    from raysearch.export import ExportedPredictor

    if payload["kind"] == "torch":
        info = ModelInfo.from_json(payload["info"], where=payload.get("source", ""))
        info.source = payload.get("source", "")
        sd = torch.load(io.BytesIO(payload["data"]), map_location="cpu", weights_only=True)
        module = build_scoring_model(sd, info.backbone, info.n_labels, info.mean, info.std, where=info.source)
        return TorchPredictor(LoadedModel(info, module))
    return ExportedPredictor(payload["kind"], payload["data"], source=payload.get("source", ""))


# ----------------------------------------------------------------------------- inputs

def collect_images(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(images, ignored): files given are taken as they are (decoded by content); folders are
    walked recursively for image suffixes, other files there are returned as ignored."""
    images, ignored = [], []
    for given in inputs:
        p = Path(given)
        if p.is_file():
            images.append(p)
        elif p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
                (images if f.suffix.lower() in IMAGE_SUFFIXES else ignored).append(f)
        else:
            raise FileNotFoundError(f"no such image file or folder: {p}")
    return images, ignored


def decode_images(paths: list[Path], size: int, workers: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(uint8 (n_ok, S, S, 3), indices of the decoded paths, [(path, reason)] of the skipped)."""
    from raysearch.data.images import decode_image

    def one(p: Path):
        try:
            return decode_image(p, size), None
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files; each is a named skip
            return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}".rstrip(": ")

    n_workers = max(1, workers or min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(n_workers) as ex:
        res = list(ex.map(one, paths))
    ok = np.array([i for i, (a, _) in enumerate(res) if a is not None], dtype=np.int64)
    skipped = [(str(paths[i]), r) for i, (a, r) in enumerate(res) if a is None]
    arr = np.stack([res[i][0] for i in ok]) if len(ok) else np.zeros((0, size, size, 3), np.uint8)
    return arr, ok, skipped


# ----------------------------------------------------------------------------- output

@dataclass
class Predictions:
    """``table``: one row per scored image (``image``, ``labels`` above threshold, ``top_labels``,
    ``top_scores``, then ``score:<label>`` per label); ``skipped``: (image, reason) pairs."""

    table: pd.DataFrame
    skipped: list[tuple[str, str]]
    ignored: list[str]
    info: ModelInfo
    thresholds: np.ndarray
    threshold_source: str
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scores(self) -> np.ndarray:
        return self.table[[SCORE_PREFIX + n for n in self.info.label_names]].to_numpy(np.float32)

    def summary(self) -> dict[str, Any]:
        return {"model": self.info.source, "dataset": self.info.dataset, "n_images": len(self.table),
                "n_skipped": len(self.skipped), "n_ignored": len(self.ignored),
                "skipped": [{"image": p, "reason": r} for p, r in self.skipped],
                "ignored": self.ignored[:50], "threshold_source": self.threshold_source,
                "notes": list(self.info.notes), "wall_time_s": self.wall_time_s,
                "images_per_s": len(self.table) / self.wall_time_s if self.wall_time_s > 0 else None,
                **self.extra}


def resolve_thresholds(info: ModelInfo, threshold: float | None) -> tuple[np.ndarray, str]:
    if threshold is not None:
        if not 0 <= threshold <= 1:
            raise InputError(f"--threshold must be in [0, 1], got {threshold}")
        return np.full(info.n_labels, threshold, np.float32), f"global {threshold:g}"
    return np.asarray(info.thresholds, np.float32), info.threshold_source


def prediction_table(images: list[str], scores: np.ndarray, label_names: list[str], thresholds: np.ndarray,
                     top_k: int) -> pd.DataFrame:
    """One row per image: labels at or above their threshold (by score), top-k labels and scores."""
    names = np.asarray(label_names, dtype=object)
    k = max(1, min(top_k, len(label_names)))
    order = np.argsort(-scores, axis=1, kind="stable")
    rows = {
        "image": list(images),
        "labels": [list(names[o[scores[i, o] >= thresholds[o]]]) for i, o in enumerate(order)],
        "top_labels": [list(names[o[:k]]) for o in order],
        "top_scores": [[float(s) for s in scores[i, o[:k]]] for i, o in enumerate(order)],
    }
    df = pd.DataFrame(rows)
    score_cols = pd.DataFrame(scores.astype(np.float32), columns=[SCORE_PREFIX + n for n in label_names])
    return pd.concat([df, score_cols], axis=1)


def write_predictions(df: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write by suffix: .parquet (list columns), .jsonl (one object per line), .csv (lists as JSON)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in OUT_FORMATS:
        raise InputError(f"--out {out}: unknown format {suffix or '(no suffix)'!r}; use one of {', '.join(OUT_FORMATS)}")
    from raysearch._io import atomic_path

    with atomic_path(out) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif suffix == ".jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            flat = df.copy()
            for c in ("labels", "top_labels", "top_scores"):
                flat[c] = [json.dumps(list(v)) for v in flat[c]]
            flat.to_csv(tmp, index=False)
    return out


# ----------------------------------------------------------------------------- in-process path

def predict(model: Predictor | str | os.PathLike, inputs: Iterable[str | os.PathLike] | None = None, *,
            paths: list[Path] | None = None, top_k: int = 3, threshold: float | None = None,
            batch_size: int = 64, data_root: str | os.PathLike | None = None, progress: bool = False) -> Predictions:
    """Score image files/folders (``inputs``) or an explicit ``paths`` list with ``model``.

    Decodes and scores chunk by chunk, so memory stays flat however many images are given.
    """
    from raysearch.progress import bar

    t0 = time.perf_counter()
    pred = model if hasattr(model, "scores") else load_predictor(model, data_root=data_root)
    ignored: list[Path] = []
    if paths is None:
        paths, ignored = collect_images(inputs or [])
    paths = list(paths)
    thr, source = resolve_thresholds(pred.info, threshold)
    chunk = max(1, 4 * batch_size)
    scores, ok_all, skipped = [], [], []
    with bar(progress, "predicting", len(paths), transient=True) as b:
        for s in range(0, len(paths), chunk):
            imgs, ok, bad = decode_images(paths[s:s + chunk], pred.info.image_size)
            if len(ok):
                scores.append(pred.scores(imgs, batch_size))
            ok_all.append(ok + s)
            skipped += bad
            b.advance(min(chunk, len(paths) - s))
    _log_skips(skipped, len(paths))
    ok = np.concatenate(ok_all) if ok_all else np.zeros(0, np.int64)
    sc = np.concatenate(scores) if scores else np.zeros((0, pred.info.n_labels), np.float32)
    table = prediction_table([str(paths[i]) for i in ok], sc, pred.info.label_names, thr, top_k)
    return Predictions(table, skipped, [str(p) for p in ignored], pred.info, thr, source,
                       wall_time_s=time.perf_counter() - t0)


def _log_skips(skipped: list[tuple[str, str]], n: int) -> None:
    if skipped:
        log.warning("skipped %d of %d image(s) that could not be decoded: %s", len(skipped), n,
                    "; ".join(f"{p}: {r}" for p, r in skipped[:5]) + (" ..." if len(skipped) > 5 else ""))


# ----------------------------------------------------------------------------- Ray Data path

class _BatchScorer:
    """Ray Data callable class: the model is built once per actor, then scores batches of paths."""

    def __init__(self, payload: dict[str, Any], top_k: int, threshold: float | None, threads: int = 1) -> None:
        torch.set_num_threads(max(1, threads))
        self.pred = predictor_from_payload(payload)
        if isinstance(self.pred, TorchPredictor) and torch.cuda.is_available():  # an actor given a GPU uses it
            self.pred.loaded.module.to("cuda")
        self.thr, _ = resolve_thresholds(self.pred.info, threshold)
        self.top_k = top_k

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        paths = [Path(str(p)) for p in batch["image"]]
        imgs, ok, skipped = decode_images(paths, self.pred.info.image_size, workers=1)
        scores = self.pred.scores(imgs) if len(ok) else np.zeros((0, self.pred.info.n_labels), np.float32)
        df = prediction_table([str(paths[i]) for i in ok], scores, self.pred.info.label_names, self.thr, self.top_k)
        df.insert(0, "index", np.asarray(batch["index"])[ok].astype(np.int64))
        df.insert(2, "error", None)
        if skipped:
            done = set(ok.tolist())
            miss = [i for i in range(len(paths)) if i not in done]
            rows = pd.DataFrame({"index": np.asarray(batch["index"])[miss].astype(np.int64),
                                 "image": [s[0] for s in skipped], "error": [s[1] for s in skipped],
                                 "labels": [[]] * len(miss), "top_labels": [[]] * len(miss),
                                 "top_scores": [[]] * len(miss)})
            df = pd.concat([df, rows], ignore_index=True)
        return _shard_table(df, self.pred.info.label_names)


def _shard_table(df: pd.DataFrame, label_names: list[str]):
    """A fixed Arrow schema, so every shard (all skipped, no label above threshold...) merges."""
    import pyarrow as pa

    schema = pa.schema([("index", pa.int64()), ("image", pa.string()), ("error", pa.string()),
                        ("labels", pa.list_(pa.string())), ("top_labels", pa.list_(pa.string())),
                        ("top_scores", pa.list_(pa.float64()))]
                       + [(SCORE_PREFIX + n, pa.float32()) for n in label_names])
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)


def shards_path(out: str | Path) -> Path:
    """Where batch prediction writes its Parquet shards, next to the merged ``out``."""
    return Path(out).with_name(Path(out).name + ".shards")


def predict_ray(model: Predictor | str | os.PathLike, inputs: Iterable[str | os.PathLike] | None = None, *,
                out: str | os.PathLike, paths: list[Path] | None = None, workers: int = 2, batch_size: int = 64,
                top_k: int = 3, threshold: float | None = None, address: str | None = None,
                num_gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
                data_root: str | os.PathLike | None = None, ray_init: dict[str, Any] | None = None) -> Predictions:
    """Batch inference with Ray Data; writes ``<out>.shards/*.parquet`` and the merged ``out``.

    Joins ``address`` when given, an already initialised Ray as it is, else starts a local Ray
    sized for ``workers``.  Image paths must be readable on every node (a shared filesystem).
    """
    import ray

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in OUT_FORMATS:
        raise InputError(f"--out {out}: unknown format {out.suffix or '(no suffix)'!r}; use one of {', '.join(OUT_FORMATS)}")
    pred = model if hasattr(model, "scores") else load_predictor(model, data_root=data_root)
    ignored: list[Path] = []
    if paths is None:
        paths, ignored = collect_images(inputs or [])
    if not paths:
        raise InputError("no images to predict")
    thr, source = resolve_thresholds(pred.info, threshold)
    started = False
    if not ray.is_initialized():
        kw = dict(ray_init or {})
        if address:
            kw["address"] = address
        else:
            kw.setdefault("num_cpus", max(1, int(np.ceil(workers * cpus_per_worker))))
            kw.setdefault("include_dashboard", False)
        ray.init(**kw)
        started = True
    shards = shards_path(out)
    if shards.exists():
        import shutil

        shutil.rmtree(shards)
    try:
        ds = ray.data.from_items([{"index": i, "image": str(p)} for i, p in enumerate(paths)],
                                 override_num_blocks=max(1, min(len(paths) // batch_size + 1, 4 * workers)))
        ds = ds.map_batches(
            _BatchScorer, batch_size=batch_size, batch_format="numpy",
            fn_constructor_kwargs={"payload": pred.payload(), "top_k": top_k, "threshold": threshold,
                                   "threads": max(1, int(cpus_per_worker))},
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker, num_gpus=num_gpus_per_worker,
        )
        # writing a shard is light I/O: it must not queue for a CPU that a scoring actor holds
        ds.write_parquet(str(shards), ray_remote_args={"num_cpus": 0})
    finally:
        if started:
            ray.shutdown()
    merged = pd.read_parquet(shards).sort_values("index", kind="stable").reset_index(drop=True)
    err = merged["error"].notna()
    skipped = list(zip(merged.loc[err, "image"], merged.loc[err, "error"]))
    _log_skips(skipped, len(paths))
    table = merged[~err].drop(columns=["index", "error"]).reset_index(drop=True)
    for c in ("labels", "top_labels", "top_scores"):  # Parquet round trip gives numpy arrays
        table[c] = [list(v) for v in table[c]]
    write_predictions(table, out)
    n_shards = len(list(shards.glob("*.parquet")))
    return Predictions(table, skipped, [str(p) for p in ignored], pred.info, thr, source,
                       wall_time_s=time.perf_counter() - t0,
                       extra={"ray_workers": workers, "shards": str(shards), "n_shards": n_shards, "out": str(out)})
