"""Pool repeated (c) runs of ``bench_search.py`` over their shared searcher seeds.

Repeated runs of ``--parts c`` with the same ``--seeds`` are not independent units: a seed's
sweeps share their sampler seeds and, on one machine, the CF fits.  So each seed's difference
(arm minus random, retrained test mAP of the picks) is first averaged over the runs that ran that
seed, then the t interval is taken over the seeds.  Reads the printed (c) tables from files (saved
bench output, or docs/search.md, which quotes them; a table given twice counts once) and prints one
line per run and the pooled line.  Tables without retrained picks (``--retrain-seeds 0``) are skipped.

    python bench/pool_c_runs.py docs/search.md --arm tpe+asha-g1rf4
"""
from __future__ import annotations

import argparse
import re
import statistics as st
import sys
from pathlib import Path

HEADER = re.compile(r"\(c\) \d+ trials each")
ROW = re.compile(r"^\s+(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+|nan)\s+(\d+)\s", re.M)


def parse_runs(text: str) -> list[dict[tuple[str, int], tuple[float, int]]]:
    """Each (c) table in ``text``: {(strategy, seed): (retrained test mAP, epochs)}; a table ends at
    its first ``vs random:`` summary line, so later tables of other shapes are not read into it."""
    runs = []
    for block in HEADER.split(text)[1:]:
        block = block.split(" vs random:")[0]
        runs.append({(m[0], int(m[1])): (float(m[4]), int(m[5])) for m in ROW.findall(block)})
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--arm", default="tpe+asha-g1rf4", help="strategy compared with random+fifo")
    ap.add_argument("--reference", default="random+fifo")
    ap.add_argument("--runs", type=int, default=0, help="pool only the first this many runs (0: all)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import numpy as np

    from raysearch.experiment.stats import mean_t_interval

    runs: list[dict] = []
    for f in args.files:
        for r in parse_runs(Path(f).read_text()):
            if r in runs:
                continue  # the same table quoted twice (saved output and docs/search.md)
            if any(v != v for v, _ in r.values()):  # NaN: run without retraining
                print(f"skipped a table without retrained picks in {f}")
                continue
            runs.append(r)
    seeds_of = [sorted(s for (lab, s) in r if lab == args.arm and (args.reference, s) in r) for r in runs]
    used = [(r, s) for r, s in zip(runs, seeds_of) if s]
    if args.runs:
        used = used[:args.runs]
    if not used:
        raise SystemExit(f"no (c) table with both {args.arm!r} and {args.reference!r} rows in {args.files}")
    per_seed: dict[int, list[float]] = {}
    ratios, totals = [], [0, 0]
    for i, (r, seeds) in enumerate(used, 1):
        d = [r[(args.arm, s)][0] - r[(args.reference, s)][0] for s in seeds]
        ratio = sum(r[(args.arm, s)][1] for s in seeds) / sum(r[(args.reference, s)][1] for s in seeds)
        ratios.append(ratio)
        totals[0] += sum(r[(args.arm, s)][1] for s in seeds)
        totals[1] += sum(r[(args.reference, s)][1] for s in seeds)
        print(f"run {i}: {len(seeds)} seeds, epochs {ratio:.3f}x, pick diff {st.mean(d):+.4f}")
        for s, x in zip(seeds, d):
            per_seed.setdefault(s, []).append(x)
    if len(per_seed) < 2:
        raise SystemExit(f"{len(per_seed)} searcher seed(s) in all; pooling needs >= 2")
    m, half = mean_t_interval([np.mean(v) for v in per_seed.values()])
    from scipy.stats import ttest_1samp

    p = float(ttest_1samp([np.mean(v) for v in per_seed.values()], 0.0).pvalue)
    print(f"pooled over {len(used)} runs ({args.arm} vs {args.reference}), each seed's difference averaged over the "
          f"runs that ran it, t over {len(per_seed)} seeds: {m:+.4f} [95% CI {m - half:+.4f}, {m + half:+.4f}], p = {p:.2f}; "
          f"epochs {np.mean(ratios):.4f}x of {args.reference}'s on average over the runs "
          f"({totals[0] / totals[1]:.4f}x as a ratio of all the runs' epochs)")


if __name__ == "__main__":
    main()
