"""The paper's Table 3 check: AUC on 20% held-out interactions, models vs most-popular.

AUC (not top-k metrics) because every item's fit matters to the auxiliary task,
not only the few that reach a top-k list (paper Sec. 4.1.5).  Uses Cornac's own
protocol: ``RatioSplit(test_size=0.2, exclude_unknowns=True, seed)`` over the
train items' interactions and ``cornac.metrics.AUC``, evaluated per user through
``RatioSplit.evaluate`` (what ``cornac.Experiment`` calls, minus its printing).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from raysearch.cf.base import create_cf_model
from raysearch.cf.cornac_data import triplets
from raysearch.config import CFConfig

if TYPE_CHECKING:
    from raysearch.data.format import Dataset
    from raysearch.data.splits import Split


@dataclass(frozen=True)
class AUCRow:
    model: str
    auc: float
    train_s: float
    test_s: float


def auc_table(
    ds: "Dataset", split: "Split", configs: Sequence[CFConfig], *, test_size: float = 0.2, seed: int = 0,
    baseline: bool = True, progress: Callable[[str], None] | None = None,
) -> list[AUCRow]:
    """AUC of each CF config (and Cornac ``MostPop``) on the same held-out interactions."""
    from cornac.eval_methods import RatioSplit
    from cornac.metrics import AUC
    from cornac.models import MostPop

    data = triplets(ds.interaction_matrix(split.cf_items), what=f"train-item interaction matrix of {ds.name!r}")
    rs = RatioSplit(data=data, test_size=test_size, exclude_unknowns=True, seed=seed, verbose=False)
    models = [(cfg.model, create_cf_model(cfg).build()) for cfg in configs]
    if baseline:
        models.append(("mostpop", MostPop()))
    rows = []
    for name, rec in models:
        if progress:
            progress(name)
        t0 = time.perf_counter()
        test_result, _ = rs.evaluate(rec, [AUC()], user_based=True, show_validation=False)
        res = test_result.metric_avg_results
        rows.append(AUCRow(name, float(res["AUC"]), float(res.get("Train (s)", time.perf_counter() - t0)),
                           float(res.get("Test (s)", 0.0))))
    return rows
