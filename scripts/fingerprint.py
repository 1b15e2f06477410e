"""Bit-identity fingerprint of every method x weighting on ``synthetic-tiny`` (refactor guard).

Prints one JSON object: per arm, the test mAP and a SHA-256 of its test scores.  Run it before and
after a refactor that must not change behaviour and diff the two outputs::

    python scripts/fingerprint.py > /tmp/before.json   # ... refactor ...
    python scripts/fingerprint.py | diff /tmp/before.json -
"""
from __future__ import annotations

import hashlib
import json

from raysearch.config import from_dict, RunConfig
from raysearch.train import fit
from raysearch.train.data import prepare_training_data
from raysearch.train.methods import METHODS
from raysearch.cf.weights import WEIGHTINGS

BASE = {"dataset": "synthetic-tiny", "split": {"seed": 1},
        "train": {"backbone": "tiny_cnn", "weights": "none", "image_size": 16, "epochs": 2, "batch_size": 32,
                  "patience": 20, "device": "cpu", "aux_epochs": 1, "seed": 3},
        "cf": {"model": "bpr", "epochs": 3, "dim": 8}}


def arms() -> list[tuple[str, str]]:
    out = []
    for m in METHODS.names():
        weightings = WEIGHTINGS.names() if "weighting" in METHODS.get(m).reads else ["uniform"]
        out += [(m, w) for w in weightings]
    return out


def main() -> None:
    res = {}
    for method, weighting in arms():
        d = json.loads(json.dumps(BASE))
        d["train"].update(method=method, weighting=weighting)
        run = from_dict(RunConfig, d)
        r = fit(run, prepare_training_data(run))
        res[f"{method}:{weighting}"] = {"test_map": round(float(r.test_map), 12),
                                        "scores_sha256": hashlib.sha256(r.test_scores.tobytes()).hexdigest()[:16]}
    print(json.dumps(res, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
