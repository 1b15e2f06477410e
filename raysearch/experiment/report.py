"""Outputs of ``raysearch experiment``: summary table, figures, CF tables, report.html, W&B.

Everything here is recomputed from the files a run leaves (``experiment.parquet``,
``predictions.npz``, ``experiment.json``), so ``raysearch dashboard`` on an experiment
directory and the run itself print the same numbers.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from raysearch._io import atomic_path, write_json, write_text
from raysearch.experiment.protocol import (EXPERIMENT_FILE, META_FILE, PREDICTIONS_FILE, REF, ExperimentConfig,
                                           Variant, pred_key, unit_counts)
from raysearch.experiment.stats import (corrected_resampled_ttest, fold_level_ttest, holm, paired_item_bootstrap,
                                        paired_unit_tests)

log = logging.getLogger(__name__)

SUMMARY_PARQUET = "summary.parquet"
SUMMARY_MD = "summary.md"
REPORT_HTML = "report.html"
FIG_BARS = "fig_map_by_variant.png"
FIG_RATIO = "fig_map_vs_label_ratio.png"
FIG_CLASS = "fig_gain_vs_class_size.png"
FIG_CF = "fig_cf_tables.png"
CF_TABLES = "cf_tables.json"
ALPHA = 0.05


# ------------------------------------------------------------------------------ statistics

def load_experiment(out_dir: str | Path) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, Any]]:
    out = Path(out_dir)
    for f in (EXPERIMENT_FILE, PREDICTIONS_FILE, META_FILE):
        if not (out / f).is_file():
            raise FileNotFoundError(f"no {f} in {out} (is it a `raysearch experiment` output directory?)")
    units = pd.read_parquet(out / EXPERIMENT_FILE)
    z = np.load(out / PREDICTIONS_FILE, allow_pickle=False)
    return units, {k: z[k] for k in z.files}, json.loads((out / META_FILE).read_text())


def summarize(units: pd.DataFrame, preds: dict[str, np.ndarray], variants: Sequence[Variant],
              n_boot: int = 1000, boot_seed: int = 0) -> tuple[pd.DataFrame, dict[float, pd.DataFrame]]:
    """One row per (label ratio, variant) + per-class AP tables (class x variant) per ratio.

    Units (fold x seed) enter the tests only when *every* variant finished them (pairing).  The
    bootstrap uses the seeds every variant has scores for, restricted to the items that every
    such (variant, seed) scored: all items once the run is complete; with a partial run
    (``--report-only``) the items of the folds finished so far (``boot_items`` says how many).
    """
    y = preds["y_true"]
    names = [v.name for v in variants]
    by_name = {v.name: v for v in variants}
    rows, per_class = [], {}
    for ratio in sorted(units["label_ratio"].unique(), reverse=True):
        u = units[(units["label_ratio"] == ratio) & ~units["stop_reason"].isin(["error", "not_run"])]
        wide = u.pivot_table(index=["fold", "seed"], columns="variant", values="test_map").reindex(columns=names).dropna()
        seeds, covered = _pooled_coverage(u, preds, ratio, names, len(y))
        boot = None
        if seeds and covered.sum() >= 10:
            yc = y[covered]
            scores = {n: [preds[pred_key(ratio, n, s)][covered] for s in seeds] for n in names}
            boot = paired_item_bootstrap(yc, scores, REF, n_boot=n_boot, seed=boot_seed)
            from raysearch.metrics import per_class_ap

            per_class[float(ratio)] = pd.DataFrame(
                {n: np.mean([per_class_ap(yc, s) for s in scores[n]], axis=0) for n in names},
                index=[str(x) for x in preds.get("label_names", np.arange(y.shape[1]))])
            per_class[float(ratio)].insert(0, "class_size", y.sum(0).astype(int))
        ref_units = wide[REF].to_numpy() if REF in wide else np.array([])
        fold_ids = wide.index.get_level_values("fold").to_numpy()
        ratio_nb = _test_train_ratio(u)
        for n in names:
            v = by_name[n]
            vals = wide[n].to_numpy() if n in wide else np.array([])
            t_p, w_p = paired_unit_tests(ref_units, vals) if len(vals) else (math.nan, math.nan)
            nb_t, nb_p = corrected_resampled_ttest(vals - ref_units, ratio_nb, fold_ids) if len(vals) else (math.nan, math.nan)
            k, fold_p = fold_level_ttest(vals - ref_units, fold_ids) if len(vals) else (0, math.nan)
            row = {"label_ratio": float(ratio), "variant": n, "units": int(len(vals)), "folds": int(k),
                   "mean_test_map": float(np.mean(vals)) if len(vals) else math.nan,
                   "sd_test_map": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
                   "rel_change_pct": (float(np.mean(vals) / np.mean(ref_units) - 1) * 100) if len(vals) else math.nan,
                   "mean_diff": float(np.mean(vals - ref_units)) if len(vals) else math.nan,
                   "p_nb": nb_p if n != REF else math.nan, "t_nb": nb_t if n != REF else math.nan,
                   "test_train_ratio": ratio_nb, "p_fold_t": fold_p if n != REF else math.nan,
                   "p_ttest": t_p if n != REF else math.nan, "p_wilcoxon": w_p if n != REF else math.nan,
                   "seeds_pooled": len(seeds) if boot is not None else 0, "boot_items": int(covered.sum()) if boot is not None else 0}
            if boot is not None:
                row.update(pooled_map=boot.pooled_map[n], ci_low=boot.map_low[n], ci_high=boot.map_high[n],
                           diff=boot.diff[n], diff_ci_low=boot.diff_low[n], diff_ci_high=boot.diff_high[n],
                           p_boot=boot.p_value[n] if n != REF else math.nan)
            if v.shuffled_from and v.shuffled_from in wide:
                # the negative control against the arm it shuffles: does the gain need the real CF vectors?
                d = vals - wide[v.shuffled_from].to_numpy()
                row.update(control_of=v.shuffled_from, control_diff=float(np.mean(d)),
                           control_p_nb=corrected_resampled_ttest(d, ratio_nb, fold_ids)[1],
                           control_p_fold_t=fold_level_ttest(d, fold_ids)[1])
            rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("pooled_map", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high", "p_boot",
                "control_of", "control_diff", "control_p_nb", "control_p_fold_t"):
        if col not in df:
            df[col] = None if col == "control_of" else math.nan
    for col in ("p_nb", "p_fold_t", "p_ttest", "p_wilcoxon", "p_boot"):
        df[col + "_holm"] = math.nan
        for ratio, g in df.groupby("label_ratio"):
            # the family: every arm compared with Image-only, except the negative control
            fam = g[(g["variant"] != REF) & ~g["variant"].map(lambda n: bool(by_name[n].shuffled_from))]
            df.loc[fam.index, col + "_holm"] = holm(fam[col].to_numpy(dtype=float))
    # the verdict rests on the corrected resampled t-test alone (the units are dependent; see stats)
    df["beats_image_only"] = (df["p_nb_holm"] < ALPHA) & (df["mean_diff"] > 0)
    df["below_image_only"] = (df["p_nb_holm"] < ALPHA) & (df["mean_diff"] < 0)
    return df, per_class


def controlled_records(units: pd.DataFrame, preds: dict[str, np.ndarray], variants: Sequence[Variant],
                       same_config: str | None, n_boot: int = 1000) -> list[dict[str, Any]]:
    """With ``--same-config V``: every other arm at V's configuration against V itself, paired per
    unit (corrected resampled t, fold-level t) and per item (bootstrap CI of the pooled difference):
    the weighting-only comparison (e.g. interaction vs uniform at one shared configuration)."""
    from raysearch.experiment.protocol import config_owner

    if not same_config:
        return []
    cfg = ExperimentConfig(same_config=same_config)
    arms = [v.name for v in variants if v.name != same_config and not v.shuffled_from
            and config_owner(cfg, v, variants) == same_config]
    y, out = preds["y_true"], []
    for ratio in sorted(units["label_ratio"].unique(), reverse=True):
        u = units[(units["label_ratio"] == ratio) & units["stop_reason"].isin(["completed", "early_stopped"])]
        wide = u.pivot_table(index=["fold", "seed"], columns="variant", values="test_map").dropna()
        if same_config not in wide:
            continue
        names = [same_config, *[a for a in arms if a in wide]]
        seeds, covered = _pooled_coverage(u, preds, ratio, names, len(y))
        boot = (paired_item_bootstrap(y[covered], {n: [preds[pred_key(ratio, n, sd)][covered] for sd in seeds] for n in names},
                                      same_config, n_boot=n_boot) if seeds and covered.sum() >= 10 else None)
        folds = wide.index.get_level_values("fold").to_numpy()
        for a in names[1:]:
            d = wide[a].to_numpy() - wide[same_config].to_numpy()
            out.append({"label ratio": f"{ratio:g}", "arm": a, "vs": same_config, "units": str(len(d)),
                        "mean diff": _f(float(d.mean()), "diff"),
                        "pooled diff [95% CI]": "-" if boot is None else
                        f"{_f(boot.diff[a], 'diff')} [{_f(boot.diff_low[a], 'diff')}, {_f(boot.diff_high[a], 'diff')}]",
                        "p corrected t": _f(corrected_resampled_ttest(d, _test_train_ratio(u), folds)[1], "p"),
                        "p fold-level t": _f(fold_level_ttest(d, folds)[1], "p")})
    return out


def _pooled_coverage(u: pd.DataFrame, preds: dict[str, np.ndarray], ratio: float, names: Sequence[str],
                     n_items: int) -> tuple[list[int], np.ndarray]:
    """The seeds every arm has pooled scores for, and the items every such (arm, seed) scored: the
    bootstrap pairs arms on exactly these (all items once a run is complete)."""
    seeds = sorted(int(s) for s in u["seed"].unique() if all(pred_key(ratio, n, int(s)) in preds for n in names))
    covered = np.ones(n_items, dtype=bool)
    for n in names:
        for sd in seeds:
            covered &= ~np.isnan(preds[pred_key(ratio, n, sd)]).any(1)
    return seeds, covered


def _test_train_ratio(u: pd.DataFrame) -> float:
    """n_test / n_train of the folds (train = the items the model is fitted and early-stopped on)."""
    if {"n_test", "n_train"} <= set(u.columns) and (u["n_train"] > 0).any():
        ok = u[u["n_train"] > 0]
        return float(ok["n_test"].mean() / ok["n_train"].mean())
    return math.nan


# ------------------------------------------------------------------------------ tables

def _f(v: Any, kind: str = "map") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if kind == "p":
        return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"
    if kind == "pct":
        return f"{v:+.1f}%"
    if kind == "diff":
        return f"{v:+.4f}"
    return f"{v:.4f}"


def summary_records(df: pd.DataFrame) -> list[dict[str, str]]:
    """Display rows: mAP +- sd, rel. change, pooled mAP [CI], difference [CI], raw and Holm p."""
    out = []
    for _, r in df.iterrows():
        ref = r["variant"] == REF
        out.append({
            "label ratio": f"{r['label_ratio']:g}", "variant": r["variant"], "units": str(r["units"]),
            "test mAP (mean +- sd)": f"{_f(r['mean_test_map'])} +- {_f(r['sd_test_map'])}",
            "rel. vs image_only": "-" if ref else _f(r["rel_change_pct"], "pct"),
            "pooled mAP [95% CI]": f"{_f(r['pooled_map'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
            "diff [95% CI]": "-" if ref else f"{_f(r['diff'], 'diff')} [{_f(r['diff_ci_low'], 'diff')}, {_f(r['diff_ci_high'], 'diff')}]",
            "p corrected t (Holm)": "-" if ref else f"{_f(r['p_nb'], 'p')} ({_f(r['p_nb_holm'], 'p')})",
            "p fold-level t": "-" if ref else _f(r["p_fold_t"], "p"),
            "p unit t*": "-" if ref else _f(r["p_ttest"], "p"),
        })
    return out


def markdown_table(records: list[dict[str, str]]) -> str:
    if not records:
        return "(no rows)\n"
    cols = list(records[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in records]
    return "\n".join(lines) + "\n"


def control_lines(df: pd.DataFrame) -> list[str]:
    c = df[df["control_of"].notna()]
    return [f"label ratio {r['label_ratio']:g}: {r['variant']} - {r['control_of']} = {_f(r['control_diff'], 'diff')} "
            f"mAP over {r['units']} fold x seed units (corrected resampled t p = {_f(r['control_p_nb'], 'p')}, "
            f"fold-level t p = {_f(r['control_p_fold_t'], 'p')})" for _, r in c.iterrows()]


VERDICT_TEST = ("Nadeau-Bengio corrected resampled t-test over the fold x seed units (the seeds of a fold share its "
                "test items and the folds share training items, so the plain paired t-test overstates the evidence), "
                f"Holm-corrected across the arms compared with image_only, alpha = {ALPHA}")
UNIT_NOTE = ("* unit t: plain paired t-test over the fold x seed units as if they were independent; shown for comparison "
             "only, never used for the verdict")


def verdict_lines(df: pd.DataFrame) -> list[str]:
    """One line per label ratio; "no verdict" (with why) where the test could not be run, so a
    partial run never reads as "no arm beats image_only"."""
    out = []
    for ratio, g in df.groupby("label_ratio", sort=False):
        arms = g[g["variant"] != REF]
        if len(arms) and arms["p_nb_holm"].isna().all():
            units, folds = int(arms["units"].max()), int(arms["folds"].max())
            why = ("no unit finished by every arm" if units == 0 else
                   f"the units every arm finished come from {folds} fold{'s' if folds != 1 else ''}; the corrected "
                   "t needs 2 or more" if folds < 2 else "the corrected t could not be computed")
            out.append(f"label ratio {ratio:g}: no verdict ({why})")
            continue
        win = g[g["beats_image_only"]]["variant"].tolist()
        lose = g[g["below_image_only"]]["variant"].tolist()
        s = (f"beats image_only: {', '.join(win)}" if win else "no arm beats image_only")
        if lose:
            s += f"; below image_only: {', '.join(lose)}"
        out.append(f"label ratio {ratio:g}: {s} (test: corrected resampled t, Holm p < {ALPHA})")
    return out


# ------------------------------------------------------------------------------ figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_bars(df: pd.DataFrame, path: Path) -> Path:
    """Paper Table 5 as bars: pooled out-of-fold test mAP per variant with 95% bootstrap CIs."""
    plt = _plt()
    ratios = list(dict.fromkeys(df["label_ratio"]))
    fig, axes = plt.subplots(1, len(ratios), figsize=(max(5, 1.1 * df["variant"].nunique()) * len(ratios), 4.2),
                             squeeze=False, constrained_layout=True)
    for ax, ratio in zip(axes[0], ratios):
        g = df[df["label_ratio"] == ratio]
        y = g["pooled_map"].to_numpy(float)
        err = np.vstack([y - g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float) - y])
        colors = ["0.55" if v == REF else ("C3" if "shuffled" in v else "C0") for v in g["variant"]]
        ax.bar(range(len(g)), y, yerr=np.nan_to_num(err), color=colors, capsize=4)
        ax.scatter(np.arange(len(g)), g["mean_test_map"], color="k", marker="_", s=200, zorder=3, label="mean over units")
        ax.set_xticks(range(len(g)), [v.replace(":", "\n") for v in g["variant"]], fontsize=8)
        lo = (np.nanmin(g["ci_low"].to_numpy(float)) if g["ci_low"].notna().any() else
              np.nanmin(y) if np.isfinite(y).any() else 0.05)  # no finished unit: nothing to scale to
        ax.set_ylim(max(0, lo - 0.05), None)
        ax.set_title(f"label ratio {ratio:g}")
        ax.set_ylabel("test mAP (pooled out-of-fold, 95% bootstrap CI)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fig_ratio(df: pd.DataFrame, path: Path) -> Path:
    """Left: mAP vs label ratio with 95% CI bands per variant.  Right: the paired difference to
    Image-only with its 95% CI band (the bands on the left overlap even when the paired difference
    is clear: the items are shared, so their difficulty cancels only in the paired view)."""
    from matplotlib.ticker import NullFormatter

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    ratios = sorted(df["label_ratio"].unique())
    palette = [c for c in (f"C{k}" for k in range(10)) if c not in ("C3", "C7")]  # C3: the control; C7: grey
    for i, (v, g) in enumerate(df.groupby("variant", sort=False)):
        g = g.sort_values("label_ratio")
        style = ({"color": "0.4", "ls": "--"} if v == REF else
                 {"color": "C3", "ls": ":"} if "shuffled" in v else {"color": palette[i % len(palette)]})
        for ax, (y, lo, hi) in zip(axes, (("pooled_map", "ci_low", "ci_high"), ("diff", "diff_ci_low", "diff_ci_high"))):
            x, m = g["label_ratio"].to_numpy(float), g[y].to_numpy(float)
            if len(g) == 1:  # one ratio: an error bar, not a band
                err = [[m[0] - float(g[lo].iloc[0])], [float(g[hi].iloc[0]) - m[0]]]
                ax.errorbar(x * (1 + 0.02 * i), m, yerr=np.nan_to_num(err), marker="o", capsize=4, label=v,
                            color=style["color"])
                continue
            ax.plot(x, m, marker="o", label=v, **style)
            ax.fill_between(x, g[lo].astype(float), g[hi].astype(float), alpha=0.15, color=style["color"])
    for ax in axes:
        if len(ratios) > 1 and df["pooled_map"].notna().any():  # a log axis needs a spread of finite data
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.set_xlabel("label ratio (fraction of train items with labels)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test mAP (pooled out-of-fold)")
    axes[0].set_title("mAP vs label ratio (bands: 95% bootstrap CI over items)")
    axes[1].axhline(0, color="0.5", lw=1)
    axes[1].set_ylabel("mAP - image_only mAP")
    axes[1].set_title("paired difference to image_only (95% paired bootstrap CI)")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fig_class_size(per_class: dict[float, pd.DataFrame], path: Path) -> Path:
    """Relative AP change vs Image-only per class against class size (paper Sec. 4.3 analysis)."""
    plt = _plt()
    ratios = sorted(per_class, reverse=True)
    fig, axes = plt.subplots(1, max(1, len(ratios)), figsize=(6 * max(1, len(ratios)), 4), squeeze=False,
                             constrained_layout=True)
    for ax, ratio in zip(axes[0], ratios):
        t = per_class[ratio]
        for i, v in enumerate(c for c in t.columns if c not in ("class_size", REF)):
            rel = (t[v] / t[REF] - 1) * 100
            ax.scatter(t["class_size"], rel, label=v, color=f"C{i + 1}", alpha=0.75, s=18)
        ax.axhline(0, color="0.5", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("class size (items with the label)")
        ax.set_ylabel("AP change vs image_only (%)")
        ax.set_title(f"per-class gain, label ratio {ratio:g}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cf_id(cf: Any) -> str:
    """One CF configuration as a string: the tables' unit and part of their key."""
    return json.dumps(cf.__dict__, sort_keys=True, default=str)


def cf_tables_key(ds: Any, runs: dict[str, Any], cfg: ExperimentConfig) -> str:
    """What the CF tables depend on (dataset content, fold 0's split, the arms' CF configurations):
    a ``--report-only`` whose key matches the saved tables reuses them instead of refitting."""
    from raysearch.train.data import config_key

    return config_key({"dataset": ds.fingerprint, "folds": cfg.folds, "split_seed": cfg.split_seed, "val": cfg.val,
                       "cf": {k: _cf_id(r.cf) for k, r in sorted(runs.items())}})


def _saved_cf_tables(path: Path, key: str) -> dict[str, Any] | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or "error" in saved:
        return None
    return saved


def cf_tables(ds: Any, runs: dict[str, Any], cfg: ExperimentConfig) -> dict[str, list[dict[str, Any]]]:
    """Paper Tables 3 and 4 on fold 0's train items for each distinct CF configuration used."""
    from raysearch.cf import CF2LabelConfig, auc_table, cf2label_study, compute_item_vectors
    from raysearch.data.splits import make_fold_split
    from raysearch.train.methods import METHODS

    split = make_fold_split(ds, cfg.folds, 0, seed=cfg.split_seed, val=cfg.val)
    seen: dict[str, Any] = {}
    for name, run in runs.items():
        if METHODS.get(run.train.method).uses_cf:
            seen.setdefault(_cf_id(run.cf), (name, run.cf))
    auc, c2l = [], []
    if not seen:
        return {"auc": auc, "cf2label": c2l}
    configs = [c for _, c in seen.values()]
    rows = auc_table(ds, split, configs, seed=cfg.split_seed)
    for (name, c), r in zip(list(seen.values()) + [("-", None)], rows):
        auc.append({"model": r.model if c is None else f"{c.model} (dim {c.dim}) of {name}", "auc": r.auc})
    for name, c in seen.values():
        iv = compute_item_vectors(ds, split, c, data_root=cfg.data_root)
        s = cf2label_study(ds, split, iv, CF2LabelConfig())
        c2l.append({"cf": f"{c.model} (dim {c.dim}) of {name}", "cf2label_map": s["cf2label_map"],
                    "popularity_map": s["popularity_map"], "items": s["items"]})
    return {"auc": auc, "cf2label": c2l}


def fig_cf(tables: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 1.2 + 0.35 * (len(tables["auc"]) + len(tables["cf2label"]) + 2)))
    for ax in axes:
        ax.axis("off")
    if tables["auc"]:
        axes[0].table(cellText=[[r["model"], f"{r['auc']:.4f}"] for r in tables["auc"]], colLabels=["CF model", "AUC"],
                      loc="center")
    axes[0].set_title("Table 3: CF AUC on 20% held-out interactions (fold 0 train items)", fontsize=9)
    if tables["cf2label"]:
        axes[1].table(cellText=[[r["cf"], f"{r['cf2label_map']:.4f}", f"{r['popularity_map']:.4f}"] for r in tables["cf2label"]],
                      colLabels=["CF vectors", "CF2Label mAP", "popularity mAP"], loc="center")
    axes[1].set_title("Table 4: CF2Label (out-of-fold over labelled train items)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ report

def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}"></figure>'


def _html_table(records: list[dict[str, Any]]) -> str:
    if not records:
        return "<p>(none)</p>"
    cols = list(records[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) + "</tr>" for r in records)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(out: Path, title: str, protocol: str, records: list[dict[str, str]], verdict: list[str],
               control: list[str], sections: Sequence[tuple[str, Any]], figures: Sequence[Path]) -> Path:
    """One self-contained file: tables inline, figures as base64 data URIs.  ``sections``:
    (heading, rows or a sentence saying why the section is empty/skipped)."""
    fmt = lambda rows: [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]  # noqa: E731
    body = []
    for head, content in sections:
        body.append(f"<h2>{html.escape(head)}</h2>")
        body.append(f"<p>{html.escape(content)}</p>" if isinstance(content, str) else _html_table(fmt(content)))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6}",
        "</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(protocol)}</p>",
        "<h2>Summary</h2>", "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in verdict + control) + "</ul>",
        _html_table(records), f"<p>{html.escape(UNIT_NOTE)}</p>", "<h2>Figures</h2>", *(_img(f) for f in figures),
        *body, "</body></html>",
    ]
    path = out / REPORT_HTML
    write_text(path, "\n".join(parts))
    return path


def protocol_text(meta: dict[str, Any]) -> str:
    c = meta["config"]
    tune = (f" Nested tuning: in each outer fold every tuned arm got its own inner search of {c['tune']} TPE + ASHA trials "
            f"on that fold's train/val items only (the test fold in no role), the same budget for every arm; the chosen "
            f"configuration was then trained with each seed and tested on the outer fold." if c.get("tune") else
            " Configurations fixed per arm (no nested tuning): arms differ in their configuration as well as in their "
            "method unless --same-config made them share it.")
    same = f" Arms of {c['same_config']}'s method share its configuration (they differ in the weighting only)." if c.get("same_config") else ""
    return (f"{c['folds']}-fold cross-validation over the items of {c['dataset']} (split seed {c['split_seed']}; val "
            f"{c['val']:g} of the items carved from the training folds; CF vectors and weights recomputed per fold from its "
            f"train items only) x {c['seeds']} training seed{'s' if c['seeds'] != 1 else ''} x label ratios {', '.join(f'{r:g}' for r in c['label_ratios'])}; "
            f"every arm on the same folds, seeds and label masks.{tune}{same} Verdict: {VERDICT_TEST}. Beside it: "
            f"a paired t-test over folds (seeds averaged per fold). CIs: {c['n_boot']} paired bootstrap resamples of the "
            f"items on the pooled out-of-fold predictions (the same resamples for every arm; item-level, so they do "
            f"not include training randomness beyond the seeds).")


#: fields shown for every arm even when equal (what a reader checks first)
KEY_FIELDS = ("train.method", "train.weighting", "train.alpha", "train.omega", "train.lr", "train.weight_decay",
              "train.epochs", "train.trunk", "train.trainable_blocks", "train.backbone", "cf.model", "cf.dim",
              "train.shuffle_cf")


def config_records(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arm: the key fields plus every other field whose value differs between arms."""
    from raysearch.config import RunConfig, from_dict
    from raysearch.search.tracking import flat_config

    flat = {name: flat_config(from_dict(RunConfig, run, where=name)) for name, run in meta["runs"].items()}
    keys = sorted({k for f in flat.values() for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flat.values()}) > 1 and k not in KEY_FIELDS]
    cols = [k for k in KEY_FIELDS if k in keys] + differ
    return [{"variant": name, "source": meta["source"].get(name, ""), **{k: f.get(k) for k in cols}} for name, f in flat.items()]


def tuning_records(out: Path) -> list[dict[str, Any]]:
    """The configuration each inner search chose, per (ratio, fold, arm); [] without --tune."""
    from raysearch.experiment.protocol import TUNING_FILE

    p = out / TUNING_FILE
    if not p.is_file():
        return []
    t = pd.read_parquet(p)
    if t.empty:
        return []
    varying = [c for c in t.columns if c.startswith(("train.", "cf.")) and t[c].astype(str).nunique() > 1]
    cols = ["ratio", "fold", "variant", "inner_val_map", "trials", "epochs"] + varying
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
            for r in t[cols].sort_values(["ratio", "fold", "variant"]).to_dict("records")]


def weight_records(units: pd.DataFrame) -> list[dict[str, Any]]:
    """Per ratio, arm and fold: the CF weights' fallback share and range (what ``loss`` really did)."""
    cols = [c for c in ("weights_fallback_share", "weights_min", "weights_median", "weights_max", "weights_clipped_share")
            if c in units]
    if not cols:
        return []
    has = units[[c for c in cols if c != "weights_fallback_share"] or cols].notna().any(axis=1)
    u = units[units["weighting"].notna() & has & ~units["shuffled_cf"]] if "weighting" in units else units[has]
    if u.empty:
        return []
    g = u.groupby(["label_ratio", "variant", "fold"], sort=True)[cols].mean().reset_index()
    return [{k: ("-" if isinstance(v, float) and math.isnan(v) else f"{v:.3g}" if isinstance(v, float) and k != "label_ratio"
                 else v) for k, v in r.items()} for r in g.to_dict("records")]


def write_outputs(out: Path, cfg: ExperimentConfig, variants: Sequence[Variant], runs: dict[str, Any],
                  source: dict[str, str], units: pd.DataFrame, ds: Any) -> tuple[pd.DataFrame, dict[str, str]]:
    """summary.parquet/.md, figures, CF tables, report.html (+ W&B) from the files just written."""
    units, preds, meta = load_experiment(out)
    df, per_class = summarize(units, preds, variants, n_boot=cfg.n_boot)
    with atomic_path(out / SUMMARY_PARQUET) as tmp:
        df.to_parquet(tmp, index=False)
    records = summary_records(df)
    verdict, control = verdict_lines(df), control_lines(df)
    text = protocol_text(meta)
    configs, tuning, weights = config_records(meta), tuning_records(out), weight_records(units)
    controlled = controlled_records(units, preds, variants, meta["config"].get("same_config"), n_boot=cfg.n_boot)
    finished, planned = unit_counts(cfg, variants, units)
    partial = (f"Partial run: {finished} of {planned} units finished", "(the tests pair the units every arm finished; "
               "{} runs the rest).") if finished < planned else None
    md = [f"# {out.name}\n\n" + (f"**{partial[0]}** {partial[1].format('`--resume`')}\n\n" if partial else "")
          + f"{text}\n\n", markdown_table(records), f"\n{UNIT_NOTE}\n\n",
          "".join(f"- {s}\n" for s in verdict + control)]
    md += [f"\n## Weighting only: each arm vs {meta['config'].get('same_config')} at its configuration\n\n",
           markdown_table(controlled)] if controlled else [
        "\n## Weighting only\n\nskipped: no --same-config (arms may differ in their configuration too)\n"]
    md += ["\n## Configurations (key fields and every field that differs between arms; with --tune the base, "
           "each fold's pick is in the next table)\n\n", markdown_table([{k: str(v) for k, v in r.items()} for r in configs])]
    md += ["\n## Configuration chosen by each inner search\n\n",
           markdown_table([{k: str(v) for k, v in r.items()} for r in tuning]) if tuning else "skipped: no --tune\n"]
    md += ["\n## CF weights per fold (train items with a CF vector; before the Omega clip the loss applies)\n\n",
           markdown_table([{k: str(v) for k, v in r.items()} for r in weights]) if weights
           else "none: no weighted arm in this experiment\n"]
    md += ["\n## CF tables\n\n" + ("skipped: --no-cf-tables\n" if not cfg.cf_tables else "see cf_tables.json and report.html\n")]
    write_text(out / SUMMARY_MD, "".join(md))
    figs = [fig_bars(df, out / FIG_BARS), fig_ratio(df, out / FIG_RATIO)]
    if per_class:
        figs.append(fig_class_size(per_class, out / FIG_CLASS))
    cf: dict[str, list[dict[str, Any]]] = {"auc": [], "cf2label": []}
    cf_note = "skipped: --no-cf-tables"
    if cfg.cf_tables:
        key = cf_tables_key(ds, runs, cfg)
        saved = _saved_cf_tables(out / CF_TABLES, key)  # an earlier report of this experiment computed them
        try:
            cf = saved if saved is not None else {**cf_tables(ds, runs, cfg), "key": key}
            cf_note = "" if (cf["auc"] or cf["cf2label"]) else "none: no arm uses CF vectors"
        except Exception as e:  # the comparison stands without the pre-study tables; say why they are absent
            log.warning("CF tables not computed: %s", e)
            cf["error"] = [{"error": str(e)}]
            cf_note = f"not computed: {e}"
        if saved is None:
            write_json(out / CF_TABLES, cf)
        if cf["auc"] or cf["cf2label"]:
            figs.append(fig_cf(cf, out / FIG_CF))
    sections = [
        ("Weighting only: arms vs the --same-config arm at its configuration",
         controlled or "skipped: no --same-config (arms may differ in their configuration too)"),
        ("Configurations (key fields and every field that differs between arms)", configs),
        ("Configuration chosen by each inner search", tuning or "skipped: the experiment ran without --tune"),
        ("CF weights per fold", weights or "none: no weighted arm in this experiment"),
        ("CF AUC on held-out interactions (paper Table 3, fold 0)", cf_note or cf.get("auc", [])),
        ("CF2Label vs popularity (paper Table 4, fold 0)", cf_note or cf.get("cf2label", [])),
    ]
    protocol = f"{partial[0]} {partial[1].format('--resume')} {text}" if partial else text
    report = write_html(out, f"raysearch experiment: {out.name}", protocol, records, verdict, control, sections, figs)
    files = {"experiment": str(out / EXPERIMENT_FILE), "summary": str(out / SUMMARY_PARQUET),
             "summary_md": str(out / SUMMARY_MD), "report": str(report), **{f.stem: str(f) for f in figs}}
    if cfg.wandb:
        files["wandb"] = log_wandb(out, cfg, df, figs)
    return df, files


def log_wandb(out: Path, cfg: ExperimentConfig, df: pd.DataFrame, figs: Sequence[Path]) -> str:
    """The summary table and figures as one W&B run in the experiment's group (offline: files to sync)."""
    try:
        import wandb

        from raysearch.search.tracking import wandb_mode

        run = wandb.init(project=cfg.wandb_project, group=out.name, job_type="experiment-summary",
                         name=f"{out.name}-summary", dir=str(out), mode=wandb_mode(), tags=["experiment-summary"],
                         settings=wandb.Settings(console="off", save_code=False, disable_git=True))
        run.log({"summary": wandb.Table(dataframe=df.astype({"control_of": str})),
                 **{f.stem: wandb.Image(str(f)) for f in figs}})
        url = run.url or f"offline: wandb sync {run.dir.rsplit('/files', 1)[0]}"
        run.finish()
        return url
    except Exception as e:  # the local report already exists; W&B trouble must not lose it
        return f"W&B summary not logged: {e}"


# ------------------------------------------------------------------------------ dashboard

def dashboard(run_dir: str | Path, online: bool | None = None) -> dict[str, Any]:
    """``raysearch dashboard`` on an experiment directory: mAP per variant with 95% CIs and p-values
    (the summary recomputed from its files when summary.parquet is absent).  ``online`` is unused
    (the run itself logged to W&B); it keeps the signature of :func:`raysearch.report.dashboard`."""
    from raysearch.report import DASHBOARD_PNG, DASHBOARD_TABLE  # the layer below: same file names

    run_dir = Path(run_dir)
    path = run_dir / SUMMARY_PARQUET
    if path.is_file():
        summary = pd.read_parquet(path)
    else:
        units, preds, meta = load_experiment(run_dir)
        summary, _ = summarize(units, preds, [Variant(**v) for v in meta["variants"]], n_boot=meta["config"]["n_boot"])
    png = fig_bars(summary, run_dir / DASHBOARD_PNG)
    md = run_dir / DASHBOARD_TABLE
    write_text(md, "Mean test mAP over fold x seed units; pooled out-of-fold mAP with 95% CI (paired bootstrap over "
                  f"items); verdict: {VERDICT_TEST}; Holm-corrected p in brackets:\n\n"
                  + markdown_table(summary_records(summary)) + f"\n{UNIT_NOTE}\n\n"
                  + "".join(f"- {s}\n" for s in verdict_lines(summary) + control_lines(summary)))
    return {"kind": "experiment", "png": str(png), "table": str(md),
            "summary": json.loads(summary.to_json(orient="records"))}
