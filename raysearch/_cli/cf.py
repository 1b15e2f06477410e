"""CF commands: ``cf`` (item vectors + the AUC table) and ``cf2label`` (the pre-study)."""
from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any, Callable, List, Optional

import typer
from rich.console import Console

from raysearch._cli import emit_json, fail, guarded, print_table
from raysearch._cli.options import CF_FLAGS, CfCache, DataRoot, Dataset, JsonOut, LabelRatio, SplitSeed, add


def _cf_config(**given: Any):
    """CFConfig from the options actually given (CFConfig's defaults stay the single source)."""
    from raysearch.config import CFConfig, from_dict

    hidden = given.pop("hidden", None)
    data = {k: v for k, v in given.items() if v is not None}
    if hidden is not None:
        try:
            data["hidden"] = [int(h) for h in hidden.split(",") if h.strip()]
        except ValueError:
            fail(f"--hidden expects comma-separated integers (e.g. 600,200 or '' for none), got {hidden!r}")
    return from_dict(CFConfig, data, where="cf options")


def _also(spec: str, base_cfg):
    """``MODEL[:key=value,...]`` -> a CFConfig for the AUC table, other fields from ``base_cfg``."""
    from raysearch.config import CFConfig, ConfigError, from_dict, parse_yaml, to_dict

    name, _, rest = spec.partition(":")
    data = to_dict(base_cfg)
    data["model"] = name.strip()
    for kv in filter(None, (x.strip() for x in rest.split(","))):
        k, eq, v = kv.partition("=")
        if not eq:
            fail(f"--also {spec!r}: expected MODEL[:key=value,...], got {kv!r}")
        try:  # read as config files are: no anchors, no duplicate keys, "1e-3" a float
            val = parse_yaml(v, f"--also {spec!r}",
                             syntax_error=f"value {v!r} of {k.strip()!r} is not a number, word or list")
        except ConfigError as e:
            fail(str(e))
        data[k.strip()] = val
    if isinstance(data.get("hidden"), int):
        data["hidden"] = [data["hidden"]]
    return from_dict(CFConfig, data, where=f"--also {spec}")


def _load(dataset: str, data_root: Optional[str], split_seed: int, label_ratio: float = 1.0):
    from raysearch.config import SplitConfig
    from raysearch.data import load_dataset, make_split

    ds = load_dataset(dataset, data_root)
    return ds, make_split(ds, SplitConfig(seed=split_seed, label_ratio=label_ratio))


def _vectors(ds, split, cfg, data_root, use_cache: bool, console: Console):
    from raysearch.cf import compute_item_vectors

    with console.status(f"[bold]CF vectors: {cfg.model} on {ds.name}"):
        iv = guarded(lambda: compute_item_vectors(ds, split, cfg, data_root=data_root, use_cache=use_cache))
    return iv, ("hit" if iv.from_cache else "miss") if use_cache else "off"


def with_cf_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give command ``fn`` the CF flags (:data:`~raysearch._cli.options.CF_FLAGS`, one per CFConfig
    field); it receives them as one checked CFConfig, its parameter ``cfg``."""
    sig = inspect.signature(fn, eval_str=True)  # real Annotated types, as typer reads them
    own = [p for p in sig.parameters.values() if p.name != "cfg"]
    flags = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=t)
             for k, t in CF_FLAGS.items()]

    @functools.wraps(fn)
    def command(**kw: Any) -> Any:
        given = {k: kw.pop(k) for k in CF_FLAGS}
        return fn(cfg=guarded(lambda: _cf_config(**given)), **kw)

    command.__signature__ = sig.replace(parameters=[*own, *flags])  # type: ignore[attr-defined]
    return command


@with_cf_flags
def cf(
    cfg: Any = None, dataset: Dataset = "synthetic", data_root: DataRoot = None, split_seed: SplitSeed = 0,
    evaluate: Annotated[bool, typer.Option(
        "--eval/--no-eval", help="AUC on 20% held-out interactions vs MostPop.")] = True,
    also: Annotated[List[str], typer.Option(
        "--also", help="More models for the AUC table: MODEL[:key=value,...], e.g. --also bpr:lr=0.01,epochs=300 "
                       "(repeatable).")] = [],  # noqa: B006 (typer needs a list default)
    use_cache: CfCache = True,
    json_out: JsonOut = False,
) -> None:
    """Train a Cornac model on the train items' interactions; cache the item vectors; print AUC vs MostPop."""
    from raysearch.cf import CF_MODELS, auc_table

    others = [guarded(lambda s=s: _also(s, cfg)) for s in also]
    for c in [cfg, *others]:
        guarded(lambda c=c: CF_MODELS.get(c.model))
    console = Console(stderr=True)
    ds, split = guarded(lambda: _load(dataset, data_root, split_seed))
    iv, cache = _vectors(ds, split, cfg, data_root, use_cache, console)
    out: dict[str, Any] = {
        "dataset": ds.name, "model": cfg.model, "key": iv.key, "path": str(iv.path) if iv.path else None,
        "cache": cache, "dim": iv.dim, "bias": iv.bias is not None, "target_dim": iv.targets().shape[1],
        "train_items": int(len(split.train)), "items_with_vector": int(iv.has_vector.sum()),
        "train_items_without_interactions": int((~iv.has_vector[split.train]).sum()),
        "fit_seconds": iv.info.get("fit_seconds"), "config": _cfg_dict(cfg),
    }
    if evaluate:
        with console.status("[bold]AUC (20% held-out interactions)") as st:
            rows = guarded(lambda: auc_table(ds, split, [cfg, *others], seed=cfg.seed,
                                             progress=lambda n: st.update(f"[bold]AUC: fitting {n}")))
        labels = [_label(c, cfg) for c in (cfg, *others)] + ["mostpop"]
        out["auc"] = [{"model": lab, "auc": r.auc, "train_s": r.train_s} for lab, r in zip(labels, rows)]
    if json_out:
        return emit_json(out)
    _print_cf(out)


def _print_cf(out: dict[str, Any]) -> None:
    print_table(f"CF vectors: {out['dataset']} / {out['model']}",
                ("dim", "+bias", "items with vector", "train items w/o interactions", "cache", "fit (s)"),
                [(out["dim"], "yes" if out["bias"] else "no", f"{out['items_with_vector']:,}",
                  out["train_items_without_interactions"], out["cache"], out["fit_seconds"])])
    Console().print(f"cache file: {out['path']}")
    if "auc" in out:
        print_table("AUC on 20% held-out interactions (paper Table 3)", ("model", "AUC", "train (s)"),
                    [(r["model"], f"{r['auc']:.4f}", f"{r['train_s']:.1f}") for r in out["auc"]], left=1)


@with_cf_flags
def cf2label(
    cfg: Any = None, dataset: Dataset = "synthetic", data_root: DataRoot = None, split_seed: SplitSeed = 0,
    label_ratio: LabelRatio = 1.0,
    folds: Annotated[int, typer.Option("--folds", help="k of the k-fold cross-fitting over labelled train items.")] = 5,
    mlp_hidden: Annotated[int, typer.Option("--mlp-hidden", help="CF2Label hidden width.")] = 128,
    mlp_epochs: Annotated[int, typer.Option("--mlp-epochs", help="CF2Label full-batch training steps.")] = 300,
    use_cache: CfCache = True,
    json_out: JsonOut = False,
) -> None:
    """CF2Label pre-study (paper Table 4): mAP of a 2-layer MLP on CF vectors vs the popularity baseline."""
    from raysearch.cf import CF2LabelConfig, cf2label_study

    mcfg = guarded(lambda: CF2LabelConfig(hidden=mlp_hidden, epochs=mlp_epochs, folds=folds))
    console = Console(stderr=True)
    ds, split = guarded(lambda: _load(dataset, data_root, split_seed, label_ratio))
    iv, cache = _vectors(ds, split, cfg, data_root, use_cache, console)
    with console.status(f"[bold]CF2Label: {mcfg.folds}-fold cross-fitting"):
        res = guarded(lambda: cf2label_study(ds, split, iv, mcfg))
    res["cache"] = cache
    res["config"] = _cfg_dict(cfg)
    # what the loss weighting makes of it on this split: the share falling back to 1.0 and the range
    from raysearch.cf.weights import item_weights, weight_stats

    w = guarded(lambda: item_weights("loss", ds, split, iv, cf2label=mcfg, use_cache=use_cache))
    res["loss_weights"] = weight_stats("loss", split, iv.has_vector, w, ds.label_matrix)
    if json_out:
        return emit_json(res)
    print_table(f"CF2Label on {ds.name} (mAP, {res['folds']}-fold out-of-fold over {res['items']:,} labelled "
                f"train items)", ("approach", "mAP"), [("Popularity based", f"{res['popularity_map']:.4f}"),
                                                        (f"CF2Label {cfg.model}", f"{res['cf2label_map']:.4f}")],
                left=1)
    lw = res["loss_weights"]
    console.print(f"loss weights over {int(lw['items']):,} train items with a CF vector: {lw.get('fallback_share', 0):.1%} "
                  f"fall back to 1.0 (hidden or no positive label); range {lw.get('min', 0):.3g} to {lw.get('max', 0):.3g}, "
                  f"{lw.get('clipped_share', 0):.1%} of the scored at a clip bound (1/BCE relative to the median, "
                  "clipped to [0.1, 10])")


def register(app: typer.Typer) -> None:
    add(app, cf, cf2label)


def _label(c, main) -> str:
    """Model name plus the hyperparameters that differ from the main config (AUC table rows)."""
    from raysearch.config import to_dict

    a, b = to_dict(c), to_dict(main)
    diff = [f"{k}={a[k]}" for k in a if k != "model" and a[k] != b[k]]
    return c.model + (f" ({', '.join(diff)})" if diff else "")


def _cfg_dict(cfg) -> dict:
    from raysearch.config import to_dict

    return to_dict(cfg)
