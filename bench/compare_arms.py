"""One arm against another arm of the same ``raysearch experiment`` output, paired per unit
(Nadeau-Bengio corrected t, fold-level t) and per item (bootstrap CI of the pooled difference).

Why: the report compares every arm with image_only (and, with ``--same-config V``, with V); the
interaction fix is judged as interaction minus uniform at one shared configuration, on a run made
before this comparison existed too (its ``experiment.parquet`` lacks ``n_train``: the fold sizes
are recomputed as the new code records them, train + val = items - test).

    python bench/compare_arms.py /tmp/exp-posters-shared --ref mtl:uniform --arm mtl:interaction
"""
from __future__ import annotations

import argparse

from raysearch.experiment.protocol import Variant
from raysearch.experiment.report import controlled_records, load_experiment, markdown_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="+", help="experiment --out directories")
    ap.add_argument("--ref", default="mtl:uniform")
    ap.add_argument("--arm", default="mtl:interaction")
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args()
    rows = []
    for out in a.out:
        units, preds, meta = load_experiment(out)
        if "n_train" not in units:
            units["n_train"] = len(preds["y_true"]) - units["n_test"]
        arms = [Variant(**v) for v in meta["variants"]]
        for r in controlled_records(units, preds, arms, a.ref, n_boot=a.n_boot):
            if r["arm"] == a.arm:
                rows.append({"experiment": out, **r})
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
