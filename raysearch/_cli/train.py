"""``raysearch train``: run one configuration and print val and test mAP."""
from __future__ import annotations

import contextlib
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from raysearch._cli import checked, emit_json, fail, guarded, print_table
from raysearch._cli.options import (
    CF_DIM_HELP, CF_MODEL_HELP, Config, DataRoot, Dataset, Epochs, JsonOut, LabelRatio, Method, Sets, SplitSeed,
    add,
)

# train-only flags, each a TrainConfig field (``--set train.KEY=VALUE`` reaches all the others)
_F = Optional[float]
_I = Optional[int]
_S = Optional[str]
Weighting = Annotated[_S, typer.Option("--weighting", help="CF weights of the aux loss: {weightings}.")]
Alpha = Annotated[_F, typer.Option("--alpha", help="Weight of the auxiliary loss.")]
Omega = Annotated[_F, typer.Option("--omega", help="Clip of the per-item CF weights.")]
Tau = Annotated[_F, typer.Option("--tau", help="Triplet margin (contrastive).")]
Backbone = Annotated[_S, typer.Option(
    "--backbone", help="{backbones} (default efficientnet_lite0: its weights ship with the install).")]
Weights = Annotated[_S, typer.Option("--weights", help="imagenet | none | PATH to a state dict.")]
ImageSize = Annotated[_I, typer.Option("--image-size", help="Input side in pixels.")]
BatchSize = Annotated[_I, typer.Option("--batch-size", help="Global batch size.")]
Lr = Annotated[_F, typer.Option("--lr", help="Learning rate.")]
Optimizer = Annotated[_S, typer.Option("--optimizer", help="{optimizers}.")]
Schedule = Annotated[_S, typer.Option("--schedule", help="Learning-rate schedule: {schedules}.")]
Patience = Annotated[_I, typer.Option("--patience", help="Early stopping: epochs without val-mAP gain (0: off).")]
AuxEpochs = Annotated[_I, typer.Option("--aux-epochs", help="sequential: epochs of the aux-only stage.")]
TrainableBlocks = Annotated[_S, typer.Option(
    "--trainable-blocks", help="Train only the top N backbone blocks (frozen trunk outputs cached on disk); "
                               "'auto' = the backbone's default depth, 'all' = full fine-tuning.")]
TrainCfModel = Annotated[_S, typer.Option("--cf-model", help=CF_MODEL_HELP)]
TrainCfDim = Annotated[_I, typer.Option("--cf-dim", help=CF_DIM_HELP)]
Seed = Annotated[_I, typer.Option("--seed", help="Training seed (init, sampling, augmentation).")]
Device = Annotated[_S, typer.Option("--device", help="auto | cpu | mps | cuda[:N].")]
ModelOut = Annotated[_S, typer.Option(
    "--out", help="Save the model here (model.pt, model.json with val-F1 thresholds, config.yaml, result.json; "
                  "+ fit's best.pt), for raysearch predict/export.")]
Workers = Annotated[int, typer.Option(
    "--workers", help="> 1: DDP over W Ray Train workers (train.batch_size stays the global batch), as a sweep's "
                      "DDP trial.")]


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


def _given(**values: Any) -> dict[str, Any]:
    """The flags actually given (None: not on the command line)."""
    return {k: v for k, v in values.items() if v is not None}


def build_run_config(config: Optional[str], flags: dict[str, Any], sets: Optional[list[str]] = None):
    """RunConfig = (``--config`` YAML or defaults) < the explicitly given ``flags`` < ``--set`` items.

    ``flags``: top-level keys (``dataset``, ``data_root``) with their values, and sections
    (``split``, ``cf``, ``train``) with the keys given for them.
    """
    from raysearch._cli.options import apply_sets
    from raysearch.config import RunConfig, from_dict, load_run_config, to_dict

    d = to_dict(load_run_config(config) if config else RunConfig())
    for key, given in flags.items():
        if isinstance(given, dict):
            d[key].update(given)
        else:
            d[key] = given
    # a --config file was checked as it was read: what fails here came from a flag or --set
    return from_dict(RunConfig, apply_sets(d, sets, RunConfig), where="flags and --set")


def train(
    dataset: Dataset = None, method: Method = None, weighting: Weighting = None, alpha: Alpha = None,
    omega: Omega = None, tau: Tau = None, backbone: Backbone = None, weights: Weights = None,
    image_size: ImageSize = None, epochs: Epochs = None, batch_size: BatchSize = None, lr: Lr = None,
    optimizer: Optimizer = None, schedule: Schedule = None, patience: Patience = None,
    aux_epochs: AuxEpochs = None, label_ratio: LabelRatio = None, trainable_blocks: TrainableBlocks = None,
    cf_model: TrainCfModel = None, cf_dim: TrainCfDim = None, seed: Seed = None, split_seed: SplitSeed = None,
    device: Device = None, config: Config = None, sets: Sets = None, out: ModelOut = None,
    workers: Workers = 1, data_root: DataRoot = None, json_out: JsonOut = False,
) -> None:
    """Train one configuration (the same `fit` a search trial runs) and print val and test mAP."""
    tflags = _given(method=method, weighting=weighting, alpha=alpha, omega=omega, tau=tau, backbone=backbone,
                    weights=weights, image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                    optimizer=optimizer, schedule=schedule, patience=patience, aux_epochs=aux_epochs, seed=seed,
                    device=device)
    if trainable_blocks is not None:  # 'all' (None) overrides a config file's value too
        tflags["trainable_blocks"] = _trainable_blocks(trainable_blocks)
    flags = {**_given(dataset=dataset, data_root=data_root), "train": tflags,
             "split": _given(label_ratio=label_ratio, seed=split_seed), "cf": _given(model=cf_model, dim=cf_dim)}
    run = guarded(lambda: build_run_config(config, flags, sets))
    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    _check_out(out)
    _check_run(run)
    if workers > 1:
        return _train_ddp(run, workers, out, json_out)
    _train_local(run, out, json_out)


def _check_out(out: Optional[str]) -> None:
    """A model directory is never replaced silently: refuse before any work."""
    from pathlib import Path

    from raysearch.model.io import META_FILE, MODEL_FILE

    if out and any((Path(out) / f).exists() for f in (MODEL_FILE, META_FILE)):
        fail(f"--out {out} already holds a model; choose another folder or delete that one first")


def _check_run(run) -> None:
    """Before any data work: the method's stage plan, the device, the memory the image and batch sizes
    need, and the backbone's weights."""
    from raysearch.model.backbones import create_backbone
    from raysearch.train.methods import METHODS

    method = guarded(lambda: METHODS.get(run.train.method))
    if method.uses_cf:  # before the banner and the image cache, as for every other registered name
        from raysearch.cf.weights import WEIGHTINGS

        guarded(lambda: WEIGHTINGS.get(run.train.weighting))
    checked(lambda: method.stages(run.train))  # e.g. sequential with 1 epoch
    _check_device(run.train.device)
    from raysearch.data.images import check_memory

    # image size x batch size against the memory, before any allocation (a typo of 1e9 px is one line)
    guarded(lambda: check_memory(run.train.image_size, batch_size=run.train.batch_size))
    guarded(lambda: create_backbone(run.train.backbone, run.train.weights))  # fail fast on weights


def _train_local(run, out: Optional[str], json_out: bool) -> None:
    """One process: prepare the data, ``fit``, save the model directory, print the result."""
    from raysearch.train import fit, prepare_training_data

    console = Console(stderr=True)
    if not json_out:
        t = run.train
        console.print(f"[bold]train[/] {run.dataset}: {t.method} ({t.weighting}) {t.backbone}/{t.weights} "
                      f"{t.image_size}px, {t.epochs} epochs, label ratio {run.split.label_ratio}")
        if t.threads:  # a sweep's best.yaml records its trials' count: say so, it can be slow on a big machine
            console.print(f"torch threads: {t.threads} (train.threads, as the trial that wrote this config trained; "
                          "--set train.threads=0 uses all cores, with results that may differ slightly)")
    with console.status("preparing data (images, CF vectors, weights)") if not json_out else contextlib.nullcontext():
        data = guarded(lambda: prepare_training_data(run))
    try:
        res = guarded(lambda: fit(run, data, checkpoint_dir=out, progress=False if json_out else None))
    except FloatingPointError as e:  # NaN/inf loss: a one-line error naming epoch and batch
        fail(str(e))
    result = {
        "dataset": data.dataset, "method": run.train.method, "weighting": run.train.weighting,
        "backbone": run.train.backbone, **res.outcome(), "checkpoint": res.checkpoint_path, "history": res.history,
    }
    if out:  # the same model directory a sweep trial saves (raysearch predict/export read it)
        from raysearch.model.io import save_model

        guarded(lambda: save_model(out, res.best_state, run, data, result, val_scores=res.val_scores))
        if not json_out:
            console.print(f"model saved to {out} (raysearch predict --model {out} IMAGE...)")
    if json_out:
        return emit_json(result)
    print_table(f"{data.dataset}: {run.train.method}",
                ("val mAP", "test mAP", "best epoch", "epochs", "stop", "time"),
                [(f"{res.best_val_map:.4f}", f"{res.test_map:.4f}", res.best_epoch, res.epochs_run,
                  res.stop_reason, f"{res.wall_time_s:.1f}s")])


def _train_ddp(run, workers: int, out: Optional[str], json_out: bool) -> None:
    """``--workers W``: the sweep's TorchTrainer path (Ray Train DDP on a local Ray)."""
    import shutil
    import sys

    from raysearch.search.trainables import fit_distributed

    with contextlib.redirect_stdout(sys.stderr):
        metrics, model_dir = guarded(lambda: fit_distributed(run, workers))
    if out and model_dir:
        shutil.copytree(model_dir, out, dirs_exist_ok=True)
    from raysearch.train.loop import OUTCOME_KEYS

    result = {"dataset": run.dataset, "method": run.train.method, "workers": workers,
              **{k: metrics.get(k) for k in OUTCOME_KEYS}, "model_dir": out or model_dir}
    if json_out:
        return emit_json(result)
    print_table(f"{run.dataset}: {run.train.method} (DDP x{workers})", ("val mAP", "test mAP", "epochs", "stop"),
                [(f"{result['best_val_map']:.4f}", f"{result['test_map']:.4f}", result["epochs_run"],
                  result["stop_reason"])])


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


def register(app: typer.Typer) -> None:
    add(app, train)
