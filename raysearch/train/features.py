"""Frozen-trunk feature cache for ``--trainable-blocks N`` (partial fine-tuning).

With N trainable blocks, backbone blocks ``[0, split)`` (``split = n_blocks - N``) are frozen,
so their output for an image never changes during training: we compute it once, store it in
``<home>/cache/features/<key>.npy`` (float16, memory-mapped when read back) and every run /
Ray Tune trial with the same (dataset fingerprint, backbone, weights, image size, split)
reuses it; only the top N blocks and the heads run per step.

Trade-off: the cached outputs are computed from the *evaluation* view of each image (resize
+ normalisation, no random crop/flip), so training sees one fixed view per image instead of
fresh augmentations every epoch.  That removes augmentation's regularisation (more over-fitting
on small datasets) in exchange for skipping the frozen part's forward pass each step.  It is
why N should reach into the backbone's last stages: with only pooled features and an MLP
trainable, the auxiliary CF target has too little shared capacity to shape the representation.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch

from raysearch import _io, paths
from raysearch.model.backbones import Backbone


def feature_key(*, fingerprint: str, backbone: str, weights: str, image_size: int, split: int,
                init_seed: int | None = None) -> str:
    """Cache key; random-init weights (``weights_tag == 'none'``) also depend on the init seed."""
    parts = {"fp": fingerprint, "bb": backbone, "w": weights, "size": image_size, "split": split}
    if weights == "none":
        parts["seed"] = init_seed
    h = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{backbone}-{image_size}-s{split}-{h}"


@torch.no_grad()
def compute_trunk(backbone: Backbone, split: int, images: np.ndarray, *, batch_size: int = 64,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Outputs of blocks ``[0, split)`` for every image (eval mode, eval view), float16; with every
    block frozen (``split == n_blocks``, e.g. an MLP trunk) the pooled features, which is all the
    model reads then (``Backbone.pool`` passes 2-D input through): (H*W)x smaller, cheaper per step."""
    from raysearch.data.images import eval_batch

    was_training = backbone.training
    backbone.eval().to(device)
    out: np.ndarray | None = None
    try:
        for s in range(0, len(images), batch_size):
            x = eval_batch(torch.from_numpy(np.array(images[s:s + batch_size]))).to(device)
            h = backbone.forward_range(x, 0, split)
            if split == backbone.n_blocks:
                h = backbone.pool(h)
            h = h.float().cpu().numpy()
            if out is None:
                out = np.empty((len(images), *h.shape[1:]), dtype=np.float16)
            out[s:s + len(h)] = h
    finally:
        backbone.train(was_training)
    assert out is not None, "no images"
    if not np.isfinite(out).all():
        raise FloatingPointError("frozen trunk features overflow float16 (non-finite values); use fewer frozen blocks")
    return out


def trunk_features(backbone: Backbone, split: int, images: np.ndarray, key: str, *,
                   data_root: str | os.PathLike | None = None, batch_size: int = 64,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Cached :func:`compute_trunk`; written atomically (temp file + rename), read memory-mapped."""
    path = paths.cache_dir("features", data_root) / f"{key}.npy"
    _io.clean_stale(path.parent)  # temp files of killed writers
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] == len(images):
            return arr
    feats = compute_trunk(backbone, split, images, batch_size=batch_size, device=device)
    with _io.atomic_path(path, needed=feats.nbytes + 4096, clean=True) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save on a path would append ".npy"
            np.save(f, feats)
    return np.load(path, mmap_mode="r")
