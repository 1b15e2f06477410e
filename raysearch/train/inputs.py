"""What the model reads, per item: uint8 images augmented on the fly, or the cached features of a
frozen trunk.  One object owns that choice so the epoch step and prediction cannot disagree on
preprocessing, device placement or precision."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset


class Items(TorchDataset):
    """Position k -> (item index, uint8 image or cached trunk features) for a fixed item list."""

    def __init__(self, items: np.ndarray, source: np.ndarray) -> None:
        self.items, self.source = np.asarray(items, dtype=np.int64), source

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor]:
        i = int(self.items[k])
        return i, torch.from_numpy(np.array(self.source[i]))


@dataclass
class Inputs:
    """``source`` rows (images, or features when ``split_at > 0``) -> model input tensors."""

    source: np.ndarray
    split_at: int
    device: torch.device
    aug_gen: torch.Generator   # train-time augmentation stream (part of a resumable state)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def rows(self, items: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.source[items]))

    def to_model(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if self.split_at > 0:
            return x.to(self.device, non_blocking=True).float()
        from raysearch.data.images import eval_batch, train_batch

        x = train_batch(x, self.aug_gen) if train else eval_batch(x)
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def autocast(self):
        """bfloat16 on CUDA; full precision (and bit-exact with a seed) on CPU."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()
