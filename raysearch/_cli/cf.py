"""CF commands: ``cf`` (item vectors + the AUC table) and ``cf2label`` (the pre-study)."""
from __future__ import annotations

from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from raysearch._cli import emit_json, fail, guarded


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
    import yaml

    from raysearch.config import CFConfig, from_dict, to_dict

    name, _, rest = spec.partition(":")
    data = to_dict(base_cfg)
    data["model"] = name.strip()
    for kv in filter(None, (x.strip() for x in rest.split(","))):
        k, eq, v = kv.partition("=")
        if not eq:
            fail(f"--also {spec!r}: expected MODEL[:key=value,...], got {kv!r}")
        try:
            val = yaml.safe_load(v)
        except yaml.YAMLError:
            fail(f"--also {spec!r}: value {v!r} of {k.strip()!r} is not a number, word or list")
        if isinstance(val, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                val = float(val)
            except ValueError:
                pass
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


def register(app: typer.Typer) -> None:
    model_help = "CF model: vaecf | bpr | gmf | bivaecf | wmf (needs tensorflow)."

    @app.command()
    def cf(
        dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset name or prepared folder."),
        data_root: Optional[str] = typer.Option(None, "--data-root", help="Overrides RAYSEARCH_HOME."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help=model_help),
        dim: Optional[int] = typer.Option(None, "--dim", help="Latent size = item vector size (default 64)."),
        hidden: Optional[str] = typer.Option(None, "--hidden", help="VAECF encoder hidden layers, e.g. 600,200."),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        lr: Optional[float] = typer.Option(None, "--lr"),
        beta: Optional[float] = typer.Option(None, "--beta", help="VAECF KL weight."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        reg: Optional[float] = typer.Option(None, "--reg", help="BPR lambda_reg / GMF weight decay / WMF lambdas."),
        bias: Optional[bool] = typer.Option(None, "--bias/--no-bias", help="Learn and export a per-item bias."),
        seed: Optional[int] = typer.Option(None, "--seed"),
        split_seed: int = typer.Option(0, "--split-seed", help="Seed of the item-level train/val/test split."),
        evaluate: bool = typer.Option(True, "--eval/--no-eval", help="AUC on 20%% held-out interactions vs MostPop."),
        also: list[str] = typer.Option([], "--also", help="More models for the AUC table: MODEL[:key=value,...], "
                                        "e.g. --also bpr:lr=0.01,epochs=300 (repeatable)."),
        use_cache: bool = typer.Option(True, "--cache/--no-cache", help="Read/write the Parquet vector cache."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    ) -> None:
        """Train a Cornac model on the train items' interactions; cache the item vectors; print AUC vs MostPop."""
        from raysearch.cf import auc_table

        cfg = guarded(lambda: _cf_config(model=model, dim=dim, hidden=hidden, epochs=epochs, lr=lr, beta=beta,
                                         batch_size=batch_size, reg=reg, bias=bias, seed=seed))
        others = [guarded(lambda s=s: _also(s, cfg)) for s in also]
        from raysearch.cf import CF_MODELS

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
            emit_json(out)
            return
        t = Table(title=f"CF vectors: {ds.name} / {cfg.model}")
        for c in ("dim", "+bias", "items with vector", "train items w/o interactions", "cache", "fit (s)"):
            t.add_column(c, justify="right")
        t.add_row(str(iv.dim), "yes" if out["bias"] else "no", f"{out['items_with_vector']:,}",
                  str(out["train_items_without_interactions"]), cache, str(out["fit_seconds"]))
        Console().print(t)
        Console().print(f"cache file: {out['path']}")
        if evaluate:
            a = Table(title="AUC on 20% held-out interactions (paper Table 3)")
            a.add_column("model")
            a.add_column("AUC", justify="right")
            a.add_column("train (s)", justify="right")
            for r in out["auc"]:
                a.add_row(r["model"], f"{r['auc']:.4f}", f"{r['train_s']:.1f}")
            Console().print(a)

    @app.command("cf2label")
    def cf2label(
        dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset name or prepared folder."),
        data_root: Optional[str] = typer.Option(None, "--data-root", help="Overrides RAYSEARCH_HOME."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help=model_help),
        dim: Optional[int] = typer.Option(None, "--dim"),
        hidden: Optional[str] = typer.Option(None, "--hidden"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        lr: Optional[float] = typer.Option(None, "--lr"),
        beta: Optional[float] = typer.Option(None, "--beta"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        reg: Optional[float] = typer.Option(None, "--reg"),
        bias: Optional[bool] = typer.Option(None, "--bias/--no-bias"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        split_seed: int = typer.Option(0, "--split-seed"),
        label_ratio: float = typer.Option(1.0, "--label-ratio", help="Fraction of train items keeping labels."),
        folds: int = typer.Option(5, "--folds", help="k of the k-fold cross-fitting over labelled train items."),
        mlp_hidden: int = typer.Option(128, "--mlp-hidden", help="CF2Label hidden width."),
        mlp_epochs: int = typer.Option(300, "--mlp-epochs", help="CF2Label full-batch training steps."),
        use_cache: bool = typer.Option(True, "--cache/--no-cache"),
        json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """CF2Label pre-study (paper Table 4): mAP of a 2-layer MLP on CF vectors vs the popularity baseline."""
        from raysearch.cf import CF2LabelConfig, cf2label_study

        cfg = guarded(lambda: _cf_config(model=model, dim=dim, hidden=hidden, epochs=epochs, lr=lr, beta=beta,
                                         batch_size=batch_size, reg=reg, bias=bias, seed=seed))
        mcfg = guarded(lambda: CF2LabelConfig(hidden=mlp_hidden, epochs=mlp_epochs, folds=folds))
        console = Console(stderr=True)
        ds, split = guarded(lambda: _load(dataset, data_root, split_seed, label_ratio))
        iv, cache = _vectors(ds, split, cfg, data_root, use_cache, console)
        with console.status(f"[bold]CF2Label: {mcfg.folds}-fold cross-fitting"):
            res = guarded(lambda: cf2label_study(ds, split, iv, mcfg))
        res["cache"] = cache
        res["config"] = _cfg_dict(cfg)
        if json_out:
            emit_json(res)
            return
        t = Table(title=f"CF2Label on {ds.name} (mAP, {res['folds']}-fold out-of-fold over "
                        f"{res['items']:,} labelled train items)")
        t.add_column("approach")
        t.add_column("mAP", justify="right")
        t.add_row("Popularity based", f"{res['popularity_map']:.4f}")
        t.add_row(f"CF2Label {cfg.model}", f"{res['cf2label_map']:.4f}")
        Console().print(t)


def _label(c, main) -> str:
    """Model name plus the hyperparameters that differ from the main config (AUC table rows)."""
    from raysearch.config import to_dict

    a, b = to_dict(c), to_dict(main)
    diff = [f"{k}={a[k]}" for k in a if k != "model" and a[k] != b[k]]
    return c.model + (f" ({', '.join(diff)})" if diff else "")


def _cfg_dict(cfg) -> dict:
    from raysearch.config import to_dict

    return to_dict(cfg)
