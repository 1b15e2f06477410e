"""Export a trained model's classification path as one self-contained file, and load it back.

Why: an exported file runs where raysearch is not installed (plain ``torch.jit.load`` or
``onnxruntime``) and is a fixed graph: nothing to unpickle.  The graph is
:class:`~raysearch.model.io.ScoringModel`: uint8 images (N, S, S, 3), decoded and centre-cropped
exactly as in training (:func:`raysearch.data.images.decode_image`), in; sigmoid scores (N, L)
out; normalisation inside; the CF head (a training aid) left out.  The label vocabulary, image
size, normalisation and per-class thresholds travel inside the file as JSON:

* TorchScript: extra file ``raysearch.json``
  (``torch.jit.load(f, _extra_files={"raysearch.json": ""})``);
* ONNX: metadata property ``raysearch`` (``onnx.load(f).metadata_props`` or
  ``onnxruntime.InferenceSession(f).get_modelmeta().custom_metadata_map``).

:func:`export_model` checks the exported scores against the PyTorch model on random images of
two batch sizes and refuses to keep a file that differs by more than ``atol`` (1e-4).
"""
from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from raysearch.errors import InputError
from raysearch.model.io import LoadedModel, ModelError, ModelInfo, load_failure, zip_problem
from raysearch.registry import Registry, UnknownNameError

META_KEY = "raysearch.json"      # TorchScript extra file
ONNX_META_KEY = "raysearch"      # ONNX metadata property
INPUT_NAME, OUTPUT_NAME = "images", "scores"
ATOL = 1e-4


class ExportError(InputError):
    """Export failed, or the exported model's scores differ from PyTorch's."""


@dataclass
class ExportReport:
    path: Path
    format: str
    max_abs_diff: float
    bytes: int


def _example(info: ModelInfo, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, info.image_size, info.image_size, 3), dtype=torch.uint8, generator=g)


@dataclass(frozen=True)
class ExportFormat:
    """One export format: how to build the file (``build(module, info, meta_json) -> bytes``), how to
    open one (``open(data, source) -> (scores_fn, meta_json)``, ``scores_fn``: uint8 NHWC numpy ->
    scores numpy), how to recognise one on disk (``detect(path) -> bool``), the suffix ``--out``
    must have (None: any)."""

    name: str
    build: Callable[[torch.nn.Module, ModelInfo, str], bytes]
    open: Callable[[bytes, str], tuple[Callable[[np.ndarray], np.ndarray], str]]
    detect: Callable[[Path], bool]
    suffix: str | None = None


#: the export formats (``raysearch export --format``): register another with
#: ``EXPORT_FORMATS.register("name", obj=ExportFormat(...))``
EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")


def export_format(fmt: str) -> ExportFormat:
    """The registered format ``fmt``; an unknown one is an :class:`ExportError` listing the choices."""
    try:
        return EXPORT_FORMATS.get(fmt)
    except UnknownNameError:
        raise ExportError(f"--format must be one of {', '.join(EXPORT_FORMATS.names())}, got {fmt!r}") from None


def export_model(model: LoadedModel, fmt: str, out: str | os.PathLike, atol: float = ATOL) -> ExportReport:
    """Write ``model`` as ``fmt`` (torchscript | onnx) to ``out`` (atomically), verified within ``atol``.

    The file is built in memory, checked, then written through :func:`raysearch._io.write_bytes`:
    torch's own file writer aborts the process when a write fails (``ulimit -f``, a full disk),
    here that is one line naming ``out`` and nothing is left beside it."""
    spec = export_format(fmt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = model.module.cpu().eval()
    meta = json.dumps(model.info.to_json())
    from raysearch._io import write_bytes

    data = spec.build(module, model.info, meta)
    exported = ExportedPredictor(fmt, data, source=str(out))
    diff = 0.0
    for n, seed in ((3, 1), (8, 2)):  # another batch size than the trace's: the batch axis is dynamic
        x = _example(model.info, n, seed)
        with torch.inference_mode():
            ref = module(x).numpy()
        diff = max(diff, float(np.abs(exported.scores(x.numpy()) - ref).max()))
    if not diff <= atol:
        raise ExportError(f"exported {fmt} scores differ from PyTorch by {diff:.2e} (> {atol:g}); file not written")
    write_bytes(out, data)  # replaces ``out`` only now that the scores check passed
    return ExportReport(out, fmt, diff, len(data))


def _to_torchscript(module: torch.nn.Module, info: ModelInfo, meta: str) -> bytes:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream but is the asked format
        # shape-derived constants (image size, SAME padding) are fixed by design; the batch axis
        # stays free, which export_model checks numerically at two other batch sizes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, _example(info, 2), check_trace=False)
        buf = io.BytesIO()  # never a path: torch.jit.save aborts the process when a file write fails
        torch.jit.save(traced, buf, _extra_files={META_KEY: meta})
    return buf.getvalue()


def _to_onnx(module: torch.nn.Module, info: ModelInfo, meta: str) -> bytes:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx', 'onnxscript' and 'onnxruntime' packages: "
                          "pip install 'raysearch[export]'") from None
    from torch.export import Dim

    try:
        prog = torch.onnx.export(module, (_example(info, 2),), None, input_names=[INPUT_NAME],
                                 output_names=[OUTPUT_NAME], dynamic_shapes={"images": {0: Dim("batch")}},
                                 dynamo=True, verbose=False, optimize=True)
    except Exception as e:  # noqa: BLE001 - report the exporter's reason in one line
        raise ExportError(f"ONNX export of backbone {info.backbone!r} failed: {str(e).splitlines()[0][:300]}") from None
    proto = prog.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, meta
    buf = io.BytesIO()
    onnx.save_model(proto, buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------- loading exported files

class ExportedPredictor:
    """Scores uint8 images with an exported file; ``info`` comes from the embedded JSON.

    A file torch.jit / onnxruntime cannot read is one :class:`ModelError` naming ``source`` and what
    is wrong with it (truncated, not a model...), never the library's traceback or advice."""

    def __init__(self, kind: str, data: bytes, source: str = "") -> None:
        self.kind, self._data = kind, data
        try:
            spec = EXPORT_FORMATS.get(kind)
        except UnknownNameError:
            raise ModelError(f"unknown exported model kind {kind!r}") from None
        self._scores, meta = spec.open(data, source)
        if not meta:
            raise ModelError(f"{source}: exported {kind} model has no raysearch metadata "
                             f"(vocabulary, image size, thresholds); export it with `raysearch export`")
        try:
            d = json.loads(meta)
        except ValueError as e:
            raise ModelError(f"{source}: the embedded raysearch metadata is not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ModelError(f"{source}: the embedded raysearch metadata is not a JSON object")
        self.info = ModelInfo.from_json(d, where=source)
        self.info.source = source

    def scores(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = []
        for s in range(0, len(images), batch_size):
            out.append(self._scores(np.ascontiguousarray(images[s:s + batch_size], dtype=np.uint8)))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.info.n_labels), np.float32)

    def payload(self) -> dict[str, Any]:
        return {"kind": self.kind, "data": self._data, "source": self.info.source}


def _open_torchscript(data: bytes, source: str) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    extra = {META_KEY: ""}
    problem = zip_problem(data)  # truncated, or damaged (torch.jit.load checks no CRC)
    if problem is not None:
        raise ModelError(f"{source}: not a loadable TorchScript file: {problem}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra).eval()
    except Exception as e:  # noqa: BLE001 - any reader error means a bad file
        raise ModelError(f"{source}: not a loadable TorchScript file: {load_failure(e)}") from None

    def scores(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return scores, extra[META_KEY]


def _open_onnx(data: bytes, source: str) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(f"{source}: reading ONNX models needs onnxruntime: pip install 'raysearch[export]'") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    try:
        session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - InvalidProtobuf, InvalidGraph, Fail...: a bad file
        raise ModelError(f"{source}: not a loadable ONNX model: {load_failure(e)}") from None
    meta = session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY, "")
    return (lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]), meta


def _is_torchscript(p: Path) -> bool:
    """A zip archive carrying raysearch's extra file (a damaged zip is not: load_model names what is wrong)."""
    if not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.endswith(f"extra/{META_KEY}") for n in names)


def _is_onnx(p: Path) -> bool:
    return p.suffix.lower() == ".onnx" and not zipfile.is_zipfile(p)


EXPORT_FORMATS.register("torchscript", obj=ExportFormat("torchscript", _to_torchscript, _open_torchscript,
                                                        _is_torchscript))
EXPORT_FORMATS.register("onnx", obj=ExportFormat("onnx", _to_onnx, _open_onnx, _is_onnx, suffix=".onnx"))
#: the registered format names (kept for callers of the former tuple)
FORMATS: tuple[str, ...] = tuple(EXPORT_FORMATS.names())


def exported_kind(path: str | os.PathLike) -> str | None:
    """The registered export format of an exported file ("onnx" | "torchscript"...), None for anything else."""
    p = Path(path)
    if not p.is_file():
        return None
    return next((n for n in EXPORT_FORMATS.names() if EXPORT_FORMATS.get(n).detect(p)), None)


def load_exported(path: str | os.PathLike) -> ExportedPredictor:
    kind = exported_kind(path)
    if kind is None:
        raise ModelError(f"{path}: not an exported raysearch model (.onnx, or TorchScript with {META_KEY})")
    data = Path(path).read_bytes()
    if not data:
        raise ModelError(f"{path}: empty file, not an exported model")
    return ExportedPredictor(kind, data, source=str(path))
