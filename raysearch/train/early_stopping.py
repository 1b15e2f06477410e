"""The best model so far and the patience counter: val mAP decides which weights a run keeps
(and writes to ``best.pt``) and when it stops early."""
from __future__ import annotations

import math
from typing import Any

import torch


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class EarlyStopping:
    """Tracks the best val mAP, its epoch and weights; ``bad_epochs`` counts epochs since."""

    def __init__(self, patience: int, checkpoint_path: str | None = None, config: dict[str, Any] | None = None) -> None:
        self.patience, self.checkpoint_path, self.config = patience, checkpoint_path, config
        self.best_val, self.best_epoch, self.bad_epochs = -math.inf, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, val_map: float, epoch: int, model: torch.nn.Module) -> bool:
        """Record one tracked epoch; True when it improved (its weights kept and checkpointed)."""
        if not val_map > self.best_val:  # NaN never improves
            self.bad_epochs += 1
            return False
        self.best_val, self.best_epoch, self.bad_epochs = val_map, epoch, 0
        self.best_state = state_copy(model)
        if self.checkpoint_path:
            from raysearch._io import torch_save  # atomic, and a write failure names the file and the limit

            torch_save({"model": self.best_state, "epoch": epoch, "val_map": val_map, "config": self.config},
                       self.checkpoint_path)
        return True

    @property
    def exhausted(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best_val": self.best_val, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load(self, state: dict[str, Any], bad_epochs: int) -> None:
        self.best_val, self.best_epoch = float(state["best_val"]), int(state["best_epoch"])
        self.best_state, self.bad_epochs = state["best_state"], bad_epochs
