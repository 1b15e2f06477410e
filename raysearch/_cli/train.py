"""``raysearch train``: run one configuration and print val and test mAP."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from raysearch._cli import checked, emit_json, fail, guarded


def _trainable_blocks(v: Optional[str]) -> Optional[int]:
    if v is None:
        return None
    if v.strip().lower() in ("auto", "default"):
        return -1
    if v.strip().lower() in ("all", "none", "full"):
        return None
    try:
        n = int(v)
    except ValueError:
        fail(f"--trainable-blocks expects an integer, 'auto' (the backbone's default depth) or 'all', got {v!r}")
    if n < 0:
        fail(f"--trainable-blocks must be >= 0, got {n}")
    return n


def build_run_config(config: Optional[str], dataset: Optional[str], data_root: Optional[str],
                     split: dict[str, Any], cf: dict[str, Any], train: dict[str, Any]):
    """RunConfig = (``--config`` YAML or defaults) with the explicitly given flags on top."""
    from raysearch.config import RunConfig, from_dict, load_run_config, to_dict

    base = load_run_config(config) if config else RunConfig()
    d = to_dict(base)
    if dataset is not None:
        d["dataset"] = dataset
    if data_root is not None:
        d["data_root"] = data_root
    for section, given in (("split", split), ("cf", cf), ("train", train)):
        d[section].update({k: v for k, v in given.items() if v is not None})
    return from_dict(RunConfig, d, where="train options")


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset name or prepared folder (default: synthetic)."),
        method: Optional[str] = typer.Option(None, "--method", help="image_only | mtl | sequential | contrastive."),
        weighting: Optional[str] = typer.Option(None, "--weighting", help="CF weights: uniform | interaction | loss."),
        alpha: Optional[float] = typer.Option(None, "--alpha", help="Weight of the auxiliary loss."),
        omega: Optional[float] = typer.Option(None, "--omega", help="Clip of the per-item CF weights."),
        tau: Optional[float] = typer.Option(None, "--tau", help="Triplet margin (contrastive)."),
        backbone: Optional[str] = typer.Option(None, "--backbone", help="efficientnet_lite0 (default; weights ship with the install) | resnet18 | mobilenet_v2 | mobilenet_v3_small | mobilenet_v3_large | regnet_y_400mf | tiny_cnn."),
        weights: Optional[str] = typer.Option(None, "--weights", help="imagenet | none | PATH to a state dict."),
        image_size: Optional[int] = typer.Option(None, "--image-size"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        lr: Optional[float] = typer.Option(None, "--lr"),
        optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw | sgd (momentum)."),
        schedule: Optional[str] = typer.Option(None, "--schedule", help="cosine | step | none."),
        patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping: epochs without val-mAP gain (0: off)."),
        aux_epochs: Optional[int] = typer.Option(None, "--aux-epochs", help="sequential: epochs of the aux-only stage."),
        label_ratio: Optional[float] = typer.Option(None, "--label-ratio", help="Fraction of train items keeping labels."),
        trainable_blocks: Optional[str] = typer.Option(
            None, "--trainable-blocks",
            help="Train only the top N backbone blocks (frozen trunk outputs cached on disk); 'auto' = the "
                 "backbone's default depth, 'all' = full fine-tuning."),
        cf_model: Optional[str] = typer.Option(None, "--cf-model", help="CF model for the auxiliary target."),
        cf_dim: Optional[int] = typer.Option(None, "--cf-dim", help="CF vector size."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Training seed (init, sampling, augmentation)."),
        split_seed: Optional[int] = typer.Option(None, "--split-seed", help="Seed of the item-level split."),
        device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda[:N]."),
        config: Optional[str] = typer.Option(None, "--config", help="RunConfig YAML (e.g. best.yaml); flags override it."),
        out: Optional[str] = typer.Option(None, "--out", help="Save the model here (model.pt, model.json with val-F1 thresholds, config.yaml, result.json; + fit's best.pt), for raysearch predict/export."),
        workers: int = typer.Option(1, "--workers", help="> 1: DDP over W Ray Train workers (train.batch_size stays the global batch), as a sweep's DDP trial."),
        data_root: Optional[str] = typer.Option(None, "--data-root", help="Overrides RAYSEARCH_HOME."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Train one configuration (the same `fit` a search trial runs) and print val and test mAP."""
        from raysearch.train import fit, prepare_training_data

        tb = _trainable_blocks(trainable_blocks)
        tdict = dict(method=method, weighting=weighting, alpha=alpha, omega=omega, tau=tau, backbone=backbone,
                     weights=weights, image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                     optimizer=optimizer, schedule=schedule, patience=patience, aux_epochs=aux_epochs,
                     trainable_blocks=tb, seed=seed, device=device)
        run = guarded(lambda: build_run_config(
            config, dataset, data_root, dict(label_ratio=label_ratio, seed=split_seed),
            dict(model=cf_model, dim=cf_dim), tdict))
        if trainable_blocks is not None and tb is None:  # 'all' overrides a config file's value
            run = dataclasses.replace(run, train=dataclasses.replace(run.train, trainable_blocks=None))
        from raysearch.train.methods import METHODS
        from raysearch.model.backbones import create_backbone

        method_obj = guarded(lambda: METHODS.get(run.train.method))
        checked(lambda: method_obj.stages(run.train))  # e.g. sequential with 1 epoch: before any data work
        _check_device(run.train.device)
        guarded(lambda: create_backbone(run.train.backbone, run.train.weights))  # fail fast on weights
        if workers > 1:
            return _train_ddp(run, workers, out, json_out)
        console = Console(stderr=True)
        if not json_out:
            t = run.train
            console.print(f"[bold]train[/] {run.dataset}: {t.method} ({t.weighting}) {t.backbone}/{t.weights} "
                          f"{t.image_size}px, {t.epochs} epochs, label ratio {run.split.label_ratio}")
        with console.status("preparing data (images, CF vectors, weights)") if not json_out else contextlib.nullcontext():
            data = guarded(lambda: prepare_training_data(run))
        try:
            res = guarded(lambda: fit(run, data, checkpoint_dir=out, progress=False if json_out else None))
        except FloatingPointError as e:  # NaN/inf loss: a one-line error naming epoch and batch
            fail(str(e))
        result = {
            "dataset": data.dataset, "method": run.train.method, "weighting": run.train.weighting,
            "backbone": run.train.backbone, "val_map": res.best_val_map, "test_map": res.test_map,
            "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "stop_reason": res.stop_reason,
            "wall_time_s": res.wall_time_s, "train_time_s": res.train_time_s,
            "checkpoint": res.checkpoint_path, "history": res.history,
        }
        if out:  # the same model directory a sweep trial saves (raysearch predict/export read it)
            from raysearch.model.io import save_model

            guarded(lambda: save_model(out, res.best_state, run, data, result))
        if json_out:
            emit_json(result)
            return
        tab = Table(title=f"{data.dataset}: {run.train.method}")
        for c in ("val mAP", "test mAP", "best epoch", "epochs", "stop", "time"):
            tab.add_column(c, justify="right")
        tab.add_row(f"{res.best_val_map:.4f}", f"{res.test_map:.4f}", str(res.best_epoch), str(res.epochs_run),
                    res.stop_reason, f"{res.wall_time_s:.1f}s")
        Console().print(tab)


def _train_ddp(run, workers: int, out: Optional[str], json_out: bool) -> None:
    """``--workers W``: the sweep's TorchTrainer path (Ray Train DDP on a local Ray)."""
    import shutil

    from raysearch.search.trainables import fit_distributed

    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    with contextlib.redirect_stdout(__import__("sys").stderr):
        metrics, model_dir = guarded(lambda: fit_distributed(run, workers))
    if out and model_dir:
        shutil.copytree(model_dir, out, dirs_exist_ok=True)
    result = {"dataset": run.dataset, "method": run.train.method, "workers": workers,
              "val_map": metrics.get("best_val_map"), "test_map": metrics.get("test_map"),
              "epochs_run": metrics.get("epochs_run"), "stop_reason": metrics.get("stop_reason"),
              "model_dir": out or model_dir}
    if json_out:
        emit_json(result)
        return
    tab = Table(title=f"{run.dataset}: {run.train.method} (DDP x{workers})")
    for c in ("val mAP", "test mAP", "epochs", "stop"):
        tab.add_column(c, justify="right")
    tab.add_row(f"{result['val_map']:.4f}", f"{result['test_map']:.4f}", str(result["epochs_run"]),
                str(result["stop_reason"]))
    Console().print(tab)


def _check_device(device: str) -> None:
    """The config checks the syntax; here, before any work, whether this machine has that device."""
    import torch

    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        idx = int(device.partition(":")[2] or 0)
        if idx >= n:
            fail(f"--device {device}: no such CUDA device on this machine ({n} visible); use --device cpu or auto")
    elif device == "mps" and not torch.backends.mps.is_available():
        fail("--device mps: Apple MPS is not available on this machine; use --device cpu or auto")

