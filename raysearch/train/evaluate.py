"""Prediction (sigmoid scores per label) for validation, test and the final model."""
from __future__ import annotations

import numpy as np
import torch

from raysearch.train.inputs import Inputs


@torch.no_grad()
def predict(model: torch.nn.Module, inputs: Inputs, items: np.ndarray, n_labels: int,
            batch_size: int = 64) -> np.ndarray:
    """(len(items), n_labels) float32 scores; the model is left in eval mode."""
    model.eval()
    out = []
    for s in range(0, len(items), batch_size):
        x = inputs.to_model(inputs.rows(items[s:s + batch_size]), train=False)
        with inputs.autocast():
            logits, _ = model(x, inputs.split_at)
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, n_labels), np.float32)
