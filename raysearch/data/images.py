"""Decode-once uint8 image cache and batch-time transforms.

Why: JPEG decoding + resizing dominates the cost of small-image training and
would be repeated by every epoch of every trial.  Instead each image is decoded
and resized exactly once into ``<home>/cache/images/<fingerprint>-<size>.npy``
(uint8, N x S x S x 3).  The file is written atomically (:func:`raysearch._io.atomic_path`,
under a lock so concurrent trials build it once) and opened with
``np.load(mmap_mode="r")``, so many trials and processes share the same
page-cache pages.  It is written sequentially, never through a memory map: a
memory-mapped sparse file on a full disk kills the process with SIGBUS, while a
plain write fails with ENOSPC, which becomes one line (the free space is also
checked before the first image, since the size is known, and so are the memory the
decode buffers need and the file-size limit: :func:`check_memory`, :func:`check_cache_space`,
one line naming ``train.image_size``).  The fingerprint hashes
the image bytes and item order, so a changed dataset gets a new cache file.  Normalisation and augmentation happen per batch on torch
tensors, where they are cheap and vectorised.

Decoding is by content, not extension (PIL sniffs the header, so a PNG named
``.jpg`` loads); images are converted to RGB (transparency composited on white,
EXIF orientation applied) and resized so the *shorter side* equals ``size``
followed by a centre crop (``ImageOps.fit``: crop to square, then resample).
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from raysearch import _io, paths
from raysearch.data.format import Dataset, DatasetError
from raysearch.errors import InputError
from raysearch.progress import bar

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(DatasetError):
    """An item's image is missing, corrupt or undecodable; the message names the file."""


class ResourceError(InputError):
    """A setting (image size, batch size) whose buffers cannot fit in memory or on disk; the message
    names the flag, its value and what it needs."""


class BadImage(NamedTuple):
    row: int
    path: Path
    reason: str


# ----------------------------------------------------------------------------- decoding

def decode_image(path: str | Path, size: int) -> np.ndarray:
    """uint8 (size, size, 3): decode by content, RGB, shorter side -> ``size``, centre crop.

    Raises ``OSError``/``ValueError`` (from PIL) for unreadable files; callers wrap them.
    """
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: let libjpeg decode at a reduced scale (>= size)
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
        im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
        arr = np.asarray(im, dtype=np.uint8)
    if arr.shape != (size, size, 3):  # defensive: exotic modes
        raise ValueError(f"decoded to shape {arr.shape}, expected {(size, size, 3)}")
    return arr


def _try_decode(path: Path, size: int) -> tuple[np.ndarray | None, str | None]:
    if not path.is_file():
        return None, "file missing"
    try:
        return decode_image(path, size), None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, f"{type(e).__name__}: {e}"


def _workers(workers: int | None) -> int:
    return max(1, workers if workers is not None else min(4, os.cpu_count() or 1))


def scan_images(ds: Dataset, *, workers: int | None = None, progress: bool = False) -> list[BadImage]:
    """Fully decode every item image (at a small size) and list the ones that fail.

    For ``prepare`` to count and report bad images up front, instead of a crash
    deep inside training.  Returns ``[(row, path, reason), ...]`` sorted by row.
    """
    bad: list[BadImage] = []
    with bar(progress, "scanning images", ds.n_items) as b, ThreadPoolExecutor(_workers(workers)) as ex:
        pths = [ds.image_path(i) for i in range(ds.n_items)]
        for i, (_, reason) in enumerate(ex.map(lambda p: _try_decode(p, 8), pths)):
            if reason is not None:
                bad.append(BadImage(i, pths[i], reason))
            b.advance()
    return bad


# ----------------------------------------------------------------------------- resource estimates

#: bytes per pixel of one image being decoded: PIL's RGB(X) image and its resized copy (4 + 4), the uint8 array (3)
DECODE_BYTES_PER_PX = 11
#: bytes per pixel of one training image: the uint8 batch (3), its float32 normalised copy (12) and the
#: first layer's input gradient-free copy (12): a lower bound, activations come on top
BATCH_BYTES_PER_PX = 27


def check_memory(size: int, *, workers: int = 1, batch_size: int | None = None,
                 size_flag: str = "train.image_size", batch_flag: str = "train.batch_size") -> None:
    """Refuse, before any allocation, an image size (and batch size) whose buffers cannot fit in the
    available memory: one line naming the flag and what it needs (a lower bound: when this passes,
    training may still need more)."""
    avail = _io.available_memory()
    if avail is None or size <= 0:
        return
    px = size * size
    decode = px * (DECODE_BYTES_PER_PX * max(1, workers) + 3)  # + the zero image of unreadable files
    if decode > avail:
        raise ResourceError(
            f"{size_flag}={size}: decoding images at {size}x{size}px needs about {_io.human(decode)} of memory "
            f"({max(1, workers)} at a time), {_io.human(avail)} available; lower {size_flag}")
    if batch_size is not None and batch_size > 0:
        batch = batch_size * px * BATCH_BYTES_PER_PX
        if batch > avail:
            raise ResourceError(
                f"{batch_flag}={batch_size} at {size_flag}={size}: one batch of {size}x{size}px images needs "
                f"at least {_io.human(batch)} of memory, {_io.human(avail)} available; lower {batch_flag} or "
                f"{size_flag}")


def check_cache_space(ds: Dataset, size: int, data_root: str | os.PathLike | None = None, *,
                      size_flag: str = "train.image_size") -> None:
    """Refuse, before writing, an image cache (``n_items x size x size x 3`` bytes) that does not fit on
    its disk or under the file-size limit: the one-line error names the cache, the flag and the count."""
    path = image_cache_path(ds, size, data_root)
    try:
        _io.check_free_space(path, _cache_bytes(ds.n_items, size))
    except _io.WriteError as e:
        raise type(e)(e.errno, f"{e.strerror} ({ds.n_items} images at {size_flag}={size}: lower {size_flag})",
                      e.filename) from None


def _cache_bytes(n: int, size: int) -> int:
    return n * size * size * 3 + 4096  # + the .npy header (at most this)


# ----------------------------------------------------------------------------- the cache

def image_cache_path(ds: Dataset, size: int, data_root: str | os.PathLike | None = None) -> Path:
    return paths.cache_dir("images", data_root) / f"{ds.fingerprint}-{size}.npy"


def _skipped_path(cache: Path) -> Path:
    return cache.with_suffix(".skipped.json")


def skipped_images(ds: Dataset, size: int, data_root: str | os.PathLike | None = None) -> list[str]:
    """Item ids whose slot in the cache is zero-filled because their image could not be read."""
    p = _skipped_path(image_cache_path(ds, size, data_root))
    return [r["item_id"] for r in json.loads(p.read_text())] if p.is_file() else []


def load_image_cache(
    ds: Dataset,
    size: int,
    data_root: str | os.PathLike | None = None,
    *,
    on_error: str = "raise",
    workers: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """uint8 (n_items, size, size, 3), memory-mapped read-only; built on first use.

    ``on_error="raise"`` (default): an unreadable image is an :class:`ImageError`
    naming the file(s).  ``on_error="skip"``: their slots are zero-filled, the
    count and item ids are logged and kept next to the cache (:func:`skipped_images`).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if size <= 0:
        raise ImageError(f"image size must be positive, got {size}")
    path = image_cache_path(ds, size, data_root)
    _io.clean_stale(path.parent)  # temp files of killed builds (up to the cache's size each)
    arr = _open(path, ds.n_items, size)
    if arr is None:
        check_memory(size, workers=_workers(workers))  # before the decode buffers are allocated
        check_cache_space(ds, size, data_root)
        with _lock(path):
            arr = _open(path, ds.n_items, size)  # another process may have built it meanwhile
            if arr is None:
                _build(ds, size, path, workers=workers, progress=progress)
                arr = _open(path, ds.n_items, size)
                assert arr is not None
    skipped = _skipped_path(path)
    if skipped.is_file():
        rows = json.loads(skipped.read_text())
        if any(_try_decode(ds.image_path(r["row"]), size)[1] is None for r in rows):
            # a previously bad file was fixed (the fingerprint hashes paths, not pixels): rebuild
            with _lock(path):
                _build(ds, size, path, workers=workers, progress=progress)
            arr = _open(path, ds.n_items, size)
            assert arr is not None
            rows = json.loads(skipped.read_text()) if skipped.is_file() else []
        if rows and on_error == "raise":
            raise ImageError(_bad_message(ds, [BadImage(r["row"], ds.image_path(r["row"]), r["reason"]) for r in rows]))
        if rows:
            log.warning("%s: %d unreadable image(s) zero-filled in the %dpx cache: item ids %s",
                        ds.name, len(rows), size, [r["item_id"] for r in rows][:20])
    return arr


def _open(path: Path, n: int, size: int) -> np.ndarray | None:
    """The cached memmap, or None when absent or not the expected shape/dtype (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError):
        log.warning("image cache %s is unreadable; rebuilding it", path)
        return None
    if arr.dtype != np.uint8 or arr.shape != (n, size, size, 3):
        log.warning("image cache %s has shape %s %s, expected %s uint8; rebuilding it",
                    path, arr.shape, arr.dtype, (n, size, size, 3))
        return None
    return arr


def _lock(path: Path):
    """Inter-process lock so concurrent trials build one cache once (others wait, then map it)."""
    return _io.file_lock(path.with_suffix(".lock"))


def _bad_message(ds: Dataset, bad: list[BadImage]) -> str:
    shown = "; ".join(f"row {b.row} ({ds.items['item_id'].iat[b.row]}): {b.path}: {b.reason}" for b in bad[:5])
    more = f" ... and {len(bad) - 5} more" if len(bad) > 5 else ""
    return (f"dataset {ds.name!r}: {len(bad)} unreadable image(s): {shown}{more}. "
            f"Fix or remove them (`raysearch prepare` reports them), or pass on_error='skip' "
            f"to zero-fill their slots.")


def _build(ds: Dataset, size: int, path: Path, *, workers: int | None, progress: bool) -> None:
    """Decode every image, writing them in item order to a temp .npy that then replaces ``path``."""
    shape = (ds.n_items, size, size, 3)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    bad: list[BadImage] = []
    pths = [ds.image_path(i) for i in range(ds.n_items)]
    blank = np.zeros((size, size, 3), dtype=np.uint8)
    with _io.atomic_path(path, needed=_cache_bytes(ds.n_items, size), clean=True) as tmp, open(tmp, "wb") as f, \
            bar(progress, f"caching {ds.name} images at {size}px", ds.n_items) as b, \
            ThreadPoolExecutor(_workers(workers)) as ex:
        np.lib.format.write_array_header_1_0(f, header)
        for i, (img, reason) in enumerate(ex.map(lambda p: _try_decode(p, size), pths)):
            if img is None:
                bad.append(BadImage(i, pths[i], reason or "unknown"))
            f.write((blank if img is None else img).tobytes())
            b.advance()
        f.close()
        sk = _skipped_path(path)
        if bad:
            _io.write_json(sk, [{"row": x.row, "item_id": ds.items["item_id"].iat[x.row], "path": str(x.path),
                                 "reason": x.reason} for x in bad])
        elif sk.exists():
            sk.unlink()


# ----------------------------------------------------------------------------- batch transforms

def _as_uint8_nhwc(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))  # memmap slices are read-only: copy
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected a uint8 tensor of shape (N, H, W, 3), got {tuple(x.shape)} {x.dtype}")
    return x


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW with ImageNet mean/std (what pretrained backbones expect).

    The layout change happens on uint8 (a quarter of the bytes), then convert and
    ``x * 1/(255 std) - mean/std`` in place on the contiguous tensor: broadcasting over a
    channels-last float tensor, as before, was several times slower on CPU.
    """
    return _normalise_nchw(x.permute(0, 3, 1, 2).contiguous())


def _normalise_nchw(x: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW (contiguous) -> float32 NCHW with ImageNet mean/std."""
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return x.to(torch.float32).mul_(1.0 / (255.0 * std)).sub_(mean / std)


def eval_batch(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Eval transform: normalisation only (the cache is already centre-cropped)."""
    return _normalise(_as_uint8_nhwc(x))


class CropBoxes(NamedTuple):
    """Per-sample integer crop boxes (pixels) and flip flags of :func:`train_batch`."""

    top: torch.Tensor     # int64 (N,)
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor    # bool (N,)


def crop_boxes(
    n: int, height: int, width: int, generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.6, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: float = 0.5,
) -> CropBoxes:
    """The random resized crop's parameters: area ~ U(scale) of the image, aspect ratio
    log-uniform in ``ratio``, a side that would exceed the image clipped to it (torchvision
    retries instead; clipping keeps it vectorised), position uniform inside the image, and a
    horizontal flip with probability ``flip``.  One ``torch.rand(n, 5)`` draw from ``generator``.
    """
    r = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * r[:, 0]
    aspect = torch.exp(np.log(ratio[0]) + (np.log(ratio[1]) - np.log(ratio[0])) * r[:, 1])
    cw = torch.round(torch.sqrt(area * aspect).clamp(max=1.0) * width).clamp(1, width).long()
    ch = torch.round(torch.sqrt(area / aspect).clamp(max=1.0) * height).clamp(1, height).long()
    left = torch.round(r[:, 2] * (width - cw)).long()
    top = torch.round(r[:, 3] * (height - ch)).long()
    return CropBoxes(top, left, ch, cw, r[:, 4] < flip)


def train_batch(
    x: torch.Tensor | np.ndarray,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.6, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: float = 0.5,
) -> torch.Tensor:
    """Train transform: per-sample random resized crop (:func:`crop_boxes`) + horizontal flip,
    then normalisation; output at the input size.

    Why on uint8 first: each crop is resized (bilinear, half-pixel centres, i.e. the same
    sampling ``grid_sample(align_corners=False)`` does over that box) by torch's vectorised uint8
    kernel on a crop of at most the image's size, and the batch is converted to float once, at
    the end.  That is ~4x cheaper than normalising to float first and ``grid_sample``-ing the
    float batch; the price is rounding the resized pixels to uint8 (<= 0.5/255) and the crop box
    to whole pixels.  All randomness comes from ``generator`` (CPU): seeded is reproducible.
    """
    x = _as_uint8_nhwc(x)
    n, h, w, _ = x.shape
    if n == 0:
        return _normalise(x)
    b = crop_boxes(n, h, w, generator, scale, ratio, flip)
    src = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory (channels_last): what the uint8 kernel wants
    out = torch.empty((n, 3, h, w), dtype=torch.uint8, device=x.device)
    for i, (t, l, ch, cw, fl) in enumerate(zip(*(v.tolist() for v in b))):
        crop = src[i:i + 1, :, t:t + ch, l:l + cw]
        if fl:
            crop = crop.flip(-1)
        if ch == h and cw == w:
            out[i:i + 1] = crop
        else:
            out[i:i + 1] = torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
    return _normalise_nchw(out)
