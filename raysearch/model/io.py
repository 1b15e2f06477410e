"""Save and load a trained model directory: the one format a sweep trial, ``raysearch train
--out`` and ``raysearch predict``/``export`` share.

A model directory holds

* ``model.pt``    the full state dict (backbone + classifier + CF head), tensors only, so it
                  loads with ``torch.load(weights_only=True)``: nothing is ever unpickled;
* ``model.json``  what inference needs besides weights: dataset name + fingerprint, label
                  vocabulary (column order of the classifier), backbone, image size,
                  normalisation, and per-class decision thresholds chosen on the validation
                  set to maximise F1 (why: sigmoid scores of class-balanced BCE are not
                  calibrated, and rare classes need a different cut than frequent ones);
* ``config.yaml`` the RunConfig (``raysearch train --config`` re-trains it);
* ``result.json`` the run's metrics.

:func:`load_model` also reads a sweep run directory (its best trial's checkpoint, chosen on
val mAP as ``best.yaml`` is), a local path or a URI (``file://``, ``s3://``, ``gs://``: resolved and
fetched by :mod:`raysearch.runs`), and legacy checkpoints without ``model.json`` (thresholds fall
back to 0.5, and the notes say so).  Inference uses :class:`ScoringModel`: uint8 NHWC images
in, sigmoid scores out, normalisation inside and the CF head dropped (a training aid only), so
the exported TorchScript/ONNX graphs are the same function.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from raysearch.config import ConfigError, RunConfig, dump_run_config, from_dict, load_run_config
from raysearch.errors import InputError

FORMAT = "raysearch-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
META_FILE = "model.json"
CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"
DEFAULT_THRESHOLD = 0.5


class ModelError(InputError):
    """A model file or directory is unusable: the message names it and what is wrong."""


class ModelMismatchError(ModelError):
    """A model does not fit what it is asked to do (other dataset, vocabulary, backbone...)."""


#: where a library's message turns into advice (torch: "If you are seeing this error...", "Re-running
#: torch.load with weights_only set to False will likely succeed" - an unsafe option): cut there
_ADVICE = re.compile(r"\s*(?:This is an internal miniz error|If you are seeing this error|Re-running `?torch\.load"
                     r"|\(1\) In PyTorch|Please file an issue|Check the documentation|Check the recorded"
                     r"|You can (?:use|file)|To fix this|Please (?:see|check|make sure)|Did you mean).*", re.S)
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*")
TRUNCATED_ZIP = "truncated or corrupt (an incomplete zip archive: was the copy or download cut short?)"


def load_failure(e: BaseException) -> str:
    """What is wrong with a file that torch / TorchScript / onnxruntime refused, in a few words:
    never the library's advice (torch suggests ``weights_only=False``, which would run the file's code)."""
    msg = str(e).strip()
    truncated = ("central directory", "failed reading zip archive", "Ran out of input", "unexpected EOF",
                 "invalid header or archive is corrupted")
    if isinstance(e, (EOFError, zipfile.BadZipFile)) or any(t in msg for t in truncated):
        return TRUNCATED_ZIP
    if "INVALID_PROTOBUF" in msg or "protobuf parsing failed" in msg:
        return "truncated or corrupt (not a valid ONNX protobuf: was the copy or download cut short?)"
    if "Weights only load failed" in msg or "Unsupported global" in msg:
        g = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", msg)
        return (f"holds pickled Python objects{f' ({g.group(1)})' if g else ''}, not plain tensors; refused: "
                f"raysearch loads tensors only and never runs a file's code")
    first = _ORT_PREFIX.sub("", msg.splitlines()[0].strip() if msg else "")
    first = _ADVICE.sub("", first).strip().rstrip(".:;,") or type(e).__name__
    return first if len(first) <= 200 else f"{first[:200]}..."


def _zip_magic(p: Path) -> bool:
    """Starts like a zip archive (torch.save / torch.jit.save files), complete or not."""
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False



def zip_problem(src: Path | bytes) -> str | None:
    """What is wrong with a torch / TorchScript zip archive (a path or its bytes), None when it is whole.

    Truncated (starts as a zip, has no end: torch's readers fail with "miniz" advice or a bare
    ``[Errno 22]``), or damaged (an entry fails its CRC: torch does not check them and would load
    silently wrong weights)."""
    import io
    import zlib

    head = src[:4] if isinstance(src, (bytes, bytearray)) else None
    if head is None:
        if not _zip_magic(src):
            return None
    elif head != b"PK\x03\x04":
        return None
    f = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
    if not zipfile.is_zipfile(f):
        return TRUNCATED_ZIP
    try:
        with zipfile.ZipFile(f) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError) as e:
        return f"corrupt (its zip archive is damaged: {str(e)[:120]})"
    if bad is not None:
        return f"corrupt: its entry {bad[:120]} fails its CRC check (the file was damaged after it was written)"
    return None


def _check_zip(p: Path, what: str) -> None:
    """A truncated or damaged zip archive: one line saying so (see :func:`zip_problem`)."""
    problem = zip_problem(p)
    if problem is not None:
        raise ModelError(f"{p}: not a loadable {what}: {problem}")


def torch_load(p: Path) -> Any:
    """``torch.load(weights_only=True)`` of a user-supplied file, its failures as one :class:`ModelError`
    naming the file and what is wrong with it."""
    try:
        if p.stat().st_size == 0:
            raise ModelError(f"{p}: empty file, not a weights file")
    except OSError as e:
        raise ModelError(f"{p}: unreadable ({e.strerror or e})") from None
    _check_zip(p, "weights file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip/pickle/EOF errors of any type: the file is bad
        if "TorchScript" in str(e):
            raise ModelError(f"{p}: a TorchScript file without raysearch's metadata (vocabulary, image size, "
                             f"thresholds); export models with `raysearch export`") from None
        raise ModelError(f"{p}: not a loadable weights file: {load_failure(e)}") from None


@dataclass
class ModelInfo:
    """Everything besides weights that inference needs (``model.json``; exported files embed it)."""

    dataset: str
    fingerprint: str | None
    label_names: list[str]
    backbone: str
    image_size: int
    mean: list[float]
    std: list[float]
    thresholds: list[float]
    threshold_source: str            # "val_f1" | "default"
    val_f1: list[float | None] | None = None      # None for a class kept at the default cut
    val_positives: list[int] | None = None
    val_map: float | None = None
    test_map: float | None = None
    source: str = ""                 # the path it was loaded from (not stored)
    notes: list[str] = field(default_factory=list)  # what loading had to assume (not stored)
    run: RunConfig | None = field(default=None, repr=False)

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("source", "notes", "run")}
        return {"format": FORMAT, "version": FORMAT_VERSION, **d}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "") -> "ModelInfo":
        if d.get("format") != FORMAT:
            raise ModelError(f"{where}: not a raysearch model description (format {d.get('format')!r})")
        if int(d.get("version", 0)) > FORMAT_VERSION:
            raise ModelError(f"{where}: model format version {d['version']} is newer than this raysearch "
                             f"understands ({FORMAT_VERSION}); upgrade raysearch")
        names = {f.name for f in dataclasses.fields(cls)} - {"source", "notes", "run"}
        missing = sorted(n for n in names if n not in d and cls.__dataclass_fields__[n].default is dataclasses.MISSING)
        if missing:
            raise ModelError(f"{where}: missing key(s) {missing}")
        info = cls(**{k: d[k] for k in names if k in d}, source=where)
        if len(info.thresholds) != info.n_labels:
            raise ModelError(f"{where}: {len(info.thresholds)} thresholds for {info.n_labels} labels")
        return info


class ScoringModel(nn.Module):
    """uint8 images (N, H, W, 3) -> sigmoid label scores (N, L): the classification path only.

    Normalisation is :func:`raysearch.data.images.eval_batch` itself (traced into exported
    graphs too), so scores equal the training loop's evaluation predictions for the same
    decoded images, bit for bit, whatever that function's arithmetic becomes.
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Linear, trunk: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.trunk = trunk
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from raysearch.data.images import eval_batch

        f = self.backbone(eval_batch(images))
        if self.trunk is not None:
            f = self.trunk(f)
        return torch.sigmoid(self.classifier(f))


@dataclass
class LoadedModel:
    info: ModelInfo
    module: ScoringModel

    def scores(self, images: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
        return score_images(self.module, images, batch_size)

    def check(self, **expect: Any) -> None:
        check_compatible(self.info, **expect)


# ----------------------------------------------------------------------------- building blocks

def build_scoring_model(state_dict: Mapping[str, torch.Tensor], backbone: str, n_labels: int,
                        mean: list[float], std: list[float], where: str = "") -> ScoringModel:
    """Backbone (random init, then the stored weights, strictly) + classifier; CF head keys ignored."""
    from raysearch.model.backbones import create_backbone
    from raysearch.model.heads import CollaborativeModel

    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("cf_head.")}
    w = sd.get("classifier.weight")
    if w is None:
        raise ModelMismatchError(f"{where}: no classifier.weight in the state dict: not a raysearch model")
    if w.shape[0] != n_labels:
        raise ModelMismatchError(f"{where}: the classifier has {w.shape[0]} outputs but the label vocabulary has "
                                 f"{n_labels} labels")
    # the state dict says whether a shared MLP trunk (train.trunk="mlp") sits under the heads
    trunk = sd.get("trunk.net.0.weight")
    model = CollaborativeModel(create_backbone(backbone, "none"), n_labels, None,
                               **({"trunk": "mlp", "trunk_hidden": int(trunk.shape[0])} if trunk is not None else {}))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        missing, unexpected = _key_diff(model.state_dict(), sd)
        detail = (f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                  f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}") if missing or unexpected \
            else str(e).splitlines()[-1].strip()[:200]
        raise ModelMismatchError(f"{where}: weights do not match backbone {backbone!r} ({detail})") from None
    from raysearch.data.images import IMAGENET_MEAN, IMAGENET_STD

    if not (np.allclose(mean, IMAGENET_MEAN) and np.allclose(std, IMAGENET_STD)):
        raise ModelError(f"{where}: normalisation mean={mean} std={std} is not the ImageNet one training uses")
    return ScoringModel(model.backbone, model.classifier, getattr(model, "trunk", None)).eval()


def _key_diff(want: Mapping[str, Any], got: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(want) - set(got)), sorted(set(got) - set(want))


@torch.inference_mode()
def score_images(module: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 64,
                 index: np.ndarray | None = None) -> np.ndarray:
    """float32 (N, L) sigmoid scores of uint8 (N, S, S, 3) images, in batches; with ``index``, of
    ``images[index]``, gathered a batch at a time (the images may be the sweep's shared, read-only
    array: a whole-split copy would cost every trial process its size, 176 MiB at 100k items)."""
    module.eval()
    dev = next(module.parameters()).device
    out: np.ndarray | None = None  # one array, not a list of per-batch ones (see train.evaluate.predict)
    n = len(images) if index is None else len(index)
    for s in range(0, n, batch_size):
        x = images[s:s + batch_size] if index is None else images[index[s:s + batch_size]]
        x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        y = module(x.to(dev)).float().cpu().numpy()
        if out is None:
            out = np.empty((n, y.shape[1]), dtype=np.float32)
        out[s:s + len(y)] = y
    if out is None:
        n_labels = module.classifier.out_features if hasattr(module, "classifier") else 0
        return np.zeros((0, n_labels), np.float32)
    return out


MIN_VAL_POSITIVES = 5  # fewer validation positives than this: an F1 cut would be noise


def f1_thresholds(scores: np.ndarray, labels: np.ndarray, min_positives: int = MIN_VAL_POSITIVES
                  ) -> tuple[np.ndarray, list[float | None]]:
    """Per class, the cut maximising F1 on (scores, labels); 0.5 and None for classes with fewer
    than ``min_positives`` positives (a cut fitted to two or three items says nothing).

    The cut is the midpoint between the lowest score predicted positive and the next lower
    score, so a new image scoring like that validation positive is positive too.
    """
    n_labels = labels.shape[1]
    thr = np.full(n_labels, DEFAULT_THRESHOLD, dtype=np.float64)
    f1s: list[float | None] = [None] * n_labels
    for c in range(n_labels):
        y = labels[:, c] > 0.5
        if y.sum() < max(1, min_positives):
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        s, yy = scores[order, c], y[order]
        tp = np.cumsum(yy)
        k = np.arange(1, len(s) + 1)
        last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
        f1 = np.where(last, 2 * tp / (k + y.sum()), -1.0)
        i = int(np.argmax(f1))
        thr[c] = (s[i] + s[i + 1]) / 2 if i + 1 < len(s) else s[i] / 2
        f1s[c] = float(f1[i])
    return thr.astype(np.float32), f1s


# ----------------------------------------------------------------------------- save

def save_model(out_dir: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], run: RunConfig,
               data: Any, result: Any = None, val_scores: np.ndarray | None = None) -> Path:
    """Write a model directory (see module docstring) and return its path.

    ``data`` is the run's :class:`~raysearch.train.TrainingData`: the validation images and
    labels pick the per-class thresholds, and its dataset name, fingerprint and vocabulary are
    stored.  ``result`` is a :class:`~raysearch.train.TrainResult` or a mapping of metrics.
    ``val_scores`` (default: the ``TrainResult``'s, kept on CPU only): the training loop's own val
    scores of these weights; without them the val images are scored again, which for a frozen
    trunk trained on cached features is a full backbone pass (11 s of a posters EfficientNet trial,
    more than its training).  With a frozen trunk the loop's scores come from its float16 feature
    cache, so they differ slightly from this model's float32 ones (2e-4 at most on a posters trial,
    thresholds 4e-5): far below what a few hundred val items can resolve.
    Files are written to temporaries and renamed, so a reader never sees half a model.
    """
    from raysearch.data.images import IMAGENET_MEAN, IMAGENET_STD

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu() for k, v in state_dict.items()}
    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    scorer = build_scoring_model(sd, run.train.backbone, len(data.label_names), mean, std, where=str(out))
    val = np.asarray(data.split.val)
    if val_scores is None:
        val_scores = getattr(result, "val_scores", None)
    if val_scores is not None and np.shape(val_scores) != (len(val), len(data.label_names)):
        val_scores = None  # not this split's: score the images
    if len(val):
        scores = score_images(scorer, data.images, index=val) if val_scores is None else np.asarray(val_scores)
        thresholds, f1s = f1_thresholds(scores, data.labels[val])
        source, positives = "val_f1", [int(v) for v in (data.labels[val] > 0.5).sum(0)]
    else:
        thresholds, f1s, source = np.full(len(data.label_names), DEFAULT_THRESHOLD, np.float32), None, "default"
        positives = None
    metrics = _metrics(result)
    info = ModelInfo(
        dataset=data.dataset, fingerprint=data.fingerprint, label_names=list(data.label_names),
        backbone=run.train.backbone, image_size=int(data.images.shape[1]), mean=mean, std=std,
        thresholds=[float(t) for t in thresholds], threshold_source=source, val_f1=f1s, val_positives=positives,
        val_map=_num(metrics.get("best_val_map")), test_map=_num(metrics.get("test_map")),
    )
    from raysearch import _io

    _io.torch_save(sd, out / MODEL_FILE)  # in memory first: torch's file writer loses EFBIG/ENOSPC
    _atomic(out / CONFIG_FILE, lambda p: dump_run_config(run, p))
    _atomic(out / RESULT_FILE, lambda p: Path(p).write_text(json.dumps(metrics, indent=2, default=str)))
    _atomic(out / META_FILE, lambda p: Path(p).write_text(json.dumps(info.to_json(), indent=1)))
    return out


def _metrics(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, Mapping):
        return dict(result)
    if hasattr(result, "outcome"):  # a TrainResult: its one outcome, the keys every writer uses
        return result.outcome()
    keys = ("best_val_map", "test_map", "best_epoch", "epochs_run", "stop_reason", "wall_time_s", "train_time_s")
    return {k: getattr(result, k) for k in keys if hasattr(result, k)}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _atomic(path: Path, write) -> None:
    from raysearch._io import atomic_path

    with atomic_path(path) as tmp:
        write(tmp)


# ----------------------------------------------------------------------------- load

def load_model(path: str | os.PathLike, data_root: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory, a sweep run directory (its best trial), a legacy checkpoint
    directory (``model.pt`` + ``config.yaml``) or a ``fit`` ``best.pt`` file.

    Weights load with ``weights_only=True``.  ``data_root`` is only used for legacy checkpoints
    (their vocabulary is read from the dataset they name).  ``info.notes`` lists what had to be
    assumed (e.g. thresholds of 0.5).
    """
    from raysearch import runs

    target = runs.locate(path)  # a local path or a URI (file://, s3://, gs://): see raysearch.runs
    if not target.exists():
        raise runs.RunNotFoundError(f"model not found: {target}")
    notes: list[str] = []
    if runs.has_results(target):  # a sweep run directory: its best trial's checkpoint
        target, note = runs.best_checkpoint(target)
        notes.append(note)
    # a remote checkpoint is copied to the local cache first (only the files a model is read from)
    p = runs.fetch(target, files=(MODEL_FILE, META_FILE, CONFIG_FILE, RESULT_FILE, "best.pt"))
    if p.is_dir() and (p / META_FILE).is_file():
        info = ModelInfo.from_json(_read_json(p / META_FILE), where=str(p / META_FILE))
        info.run = _config(p / CONFIG_FILE) if (p / CONFIG_FILE).is_file() else None
        sd = _load_state(p / MODEL_FILE)
    else:
        sd, run = _legacy(p)
        info = _legacy_info(run, sd, data_root, notes)
        info.run = run
    info.source, info.notes = str(p) if target.is_local else str(target), notes + info.notes
    module = build_scoring_model(sd, info.backbone, info.n_labels, info.mean, info.std, where=info.source)
    return LoadedModel(info, module.to(device))


def _read_json(p: Path) -> dict[str, Any]:
    """A model directory's JSON; a key given twice is refused (json keeps the last one silently)."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in pairs:
            if k in seen:
                raise ModelError(f"{p}: key {k[:80]!r} is given twice; JSON would silently keep only the second")
            seen[k] = v
        return seen

    try:
        return json.loads(p.read_text(), object_pairs_hook=no_duplicates)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{p}: unreadable ({e})") from None


def _config(p: Path) -> RunConfig:
    try:
        return load_run_config(p)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - name the file
        raise ModelError(f"{p}: {e}") from None


def _load_state(p: Path) -> dict[str, torch.Tensor]:
    if not p.is_file():
        raise FileNotFoundError(f"model weights not found: {p}")
    sd = torch_load(p)  # a corrupt file, or one that needs unpickling: one line naming it
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):  # fit's best.pt
        sd = sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{p}: expected a state dict of tensors")
    return sd


def _legacy(p: Path) -> tuple[dict[str, torch.Tensor], RunConfig]:
    """(state dict, RunConfig) of a checkpoint directory without model.json, or of a best.pt file."""
    if p.is_file():
        # a truncated TorchScript/.pt file is still a zip by its first bytes: say it is cut short
        _check_zip(p, "model file" if p.suffix.lower() in (".pt", ".pth") else "TorchScript/model file")
        ck = torch_load(p) if p.suffix.lower() in (".pt", ".pth") or _zip_magic(p) else None
        if isinstance(ck, dict) and isinstance(ck.get("model"), dict) and isinstance(ck.get("config"), dict):
            return _load_state(p), from_dict(RunConfig, ck["config"], where=f"{p}: config")
        raise ModelError(f"{p}: not a raysearch model (expected a model directory, a sweep run directory, "
                         f"a fit best.pt, or an exported .onnx / TorchScript file)")
    for name in (MODEL_FILE, "best.pt"):
        if (p / name).is_file() and (p / CONFIG_FILE).is_file():
            return _load_state(p / name), _config(p / CONFIG_FILE)
    raise ModelError(f"{p}: not a model directory (no {META_FILE}, and no {MODEL_FILE} + {CONFIG_FILE})")


def _legacy_info(run: RunConfig, sd: Mapping[str, torch.Tensor], data_root, notes: list[str]) -> ModelInfo:
    from raysearch.data.images import IMAGENET_MEAN, IMAGENET_STD

    n = int(sd["classifier.weight"].shape[0]) if "classifier.weight" in sd else 0
    names, fp = [f"label_{i}" for i in range(n)], None
    try:
        from raysearch.data.registry import load_dataset

        ds = load_dataset(run.dataset, data_root if data_root is not None else run.data_root)
        names, fp = list(ds.label_names), ds.fingerprint
        notes.append(f"checkpoint has no {META_FILE}: label vocabulary read from dataset {ds.name!r}")
    except Exception as e:  # noqa: BLE001 - the dataset may not be here; say what was assumed
        notes.append(f"checkpoint has no {META_FILE} and dataset {run.dataset!r} is not available "
                     f"({str(e).splitlines()[0][:120]}): labels are named label_0..label_{n - 1}")
    notes.append(f"checkpoint has no thresholds: using {DEFAULT_THRESHOLD} for every class")
    return ModelInfo(dataset=run.dataset, fingerprint=fp, label_names=names, backbone=run.train.backbone,
                     image_size=run.train.image_size, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                     thresholds=[DEFAULT_THRESHOLD] * n, threshold_source="default")


# ----------------------------------------------------------------------------- checks

def check_compatible(info: ModelInfo, *, dataset: Any = None, label_names: list[str] | None = None,
                     backbone: str | None = None, image_size: int | None = None) -> list[str]:
    """Raise :class:`ModelMismatchError` naming every mismatch between the model and what it is asked
    to do; return warnings (same vocabulary, other dataset version) for the caller to show.

    ``dataset`` is a :class:`~raysearch.data.format.Dataset` whose items are to be scored.
    """
    problems, warnings = [], []
    if dataset is not None:
        label_names = list(dataset.label_names) if label_names is None else label_names
        if dataset.fingerprint != info.fingerprint:
            if list(dataset.label_names) == info.label_names:
                warnings.append(f"model was trained on {info.dataset!r} (fingerprint {info.fingerprint}) but dataset "
                                f"{dataset.name!r} has fingerprint {dataset.fingerprint}: same labels, other data")
            else:
                problems.append(f"model was trained on dataset {info.dataset!r} (fingerprint {info.fingerprint}), "
                                f"not {dataset.name!r} (fingerprint {dataset.fingerprint})")
    if label_names is not None and list(label_names) != info.label_names:
        a, b = set(info.label_names), set(label_names)
        if a == b:
            problems.append("label vocabulary is in another order")
        else:
            problems.append(f"label vocabulary differs: model has {len(a)} labels, asked for {len(b)}; "
                            f"only in the model {sorted(a - b)[:5]}, only asked {sorted(b - a)[:5]}")
    if backbone is not None and backbone != info.backbone:
        problems.append(f"backbone is {info.backbone!r}, not {backbone!r}")
    if image_size is not None and image_size != info.image_size:
        problems.append(f"image size is {info.image_size}px, not {image_size}px")
    if problems:
        raise ModelMismatchError(f"model {info.source or info.dataset}: " + "; ".join(problems))
    return warnings
