"""GPU smoke check: raysearch's CUDA path end to end, with a throughput reference.

    scripts/gpu-smoke.sh                      # defaults below; a temporary RAYSEARCH_HOME
    scripts/gpu-smoke.sh --dataset synthetic-clothing --image-size 224 --epochs 6

1. ``raysearch train`` of one MTL configuration on ``cuda`` (``fit``'s CUDA path: bfloat16 autocast
   and channels_last, raysearch/train/inputs.py), ``--json``: val/test mAP and the train images/s
   of every epoch.
2. A bare PyTorch loop on the same model (``build_model``: ``create_backbone("efficientnet_lite0",
   "imagenet")`` + the MTL heads), data, augmentation, optimiser and batch size, with
   ``torch.autocast("cuda", torch.bfloat16)`` and channels_last: the floor ``fit``'s overhead is
   measured against; then the same step on one batch resident on the GPU (no input pipeline: the
   compute ceiling).
3. One DDP trial: ``raysearch tune --trials 1 --gpus-per-trial G --workers-per-trial G`` with G = 2
   when the machine has 2+ GPUs (Ray Train's TorchTrainer, NCCL: Ray's backend for GPU workers; the
   workers' ``NCCL_DEBUG=INFO`` lines in the Ray logs confirm the communicator), else G = 1 (the
   same TorchTrainer/NCCL path; DDP across ranks needs a GPU per rank, NCCL cannot share one).

Throughput is train images/s, the median over the epochs after the first (warm-up: cuDNN
autotuning, allocator).  Exit status: 0 every step ran; 1 a step failed (its log's tail is
printed); 77 not run: ``torch.cuda.is_available()`` is False (one line on stderr saying why).
``--allow-cpu`` runs the same steps on the CPU (gloo instead of NCCL) to test this script without a
GPU; its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

NOT_RUN = 77
ROOT = Path(__file__).resolve().parents[1]


def cuda_unavailable() -> str | None:
    """None when torch can use a GPU; else one line saying why not (build, driver, the rule)."""
    if torch.cuda.is_available():
        return None
    from raysearch import cluster_cuda as cc

    why = []
    build = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else None
    driver = cc.driver_version()
    if build is None:
        why.append("a CPU-only torch build")
    elif driver is None:
        why.append("no NVIDIA driver or GPU visible")
    elif build in cc.MIN_DRIVER and int(driver.split(".")[0]) < cc.MIN_DRIVER[build]:
        why.append(f"NVIDIA driver {driver}, this +{build} build needs >= {cc.MIN_DRIVER[build]}: "
                   f"install {cc.TORCH}+{cc.CUDA} (cluster/README.md, 'CUDA and NVIDIA drivers')")
    else:
        why.append(f"NVIDIA driver {driver}")
    return (f"gpu-smoke: not run: torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"{'; '.join(why)}); run it on a machine with an NVIDIA GPU")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "raysearch.cli", *args]


def _run(cmd: list[str], log: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``cmd`` with stderr to ``log``; (exit status, stdout)."""
    with open(log, "w") as err:
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return 124, ""
    return r.returncode, r.stdout


def _tail(log: Path, n: int = 15) -> str:
    try:
        return "\n".join("    " + line for line in log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _steady(rates: list[float]) -> float:
    """Median images/s over the epochs after the first (all of them when there is only one)."""
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def bare_amp_loop(run: Any, data: Any, device: torch.device, epochs: int) -> tuple[float, float]:
    """(images/s with the same input pipeline as fit, images/s on one GPU-resident batch)."""
    import numpy as np
    import torch.nn.functional as F

    from raysearch.data.images import train_batch
    from raysearch.train.loop import _make_optimizer, build_model

    t = run.train
    torch.manual_seed(t.seed)
    model, split_at = build_model(run, data)   # create_backbone(t.backbone, t.weights) + classifier + CF head
    assert split_at == 0, "full fine-tuning expected"
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = _make_optimizer(model, run)
    cuda = device.type == "cuda"
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext  # noqa: E731
    train = data.split.train
    y = torch.tensor(data.labels, dtype=torch.float32, device=device)
    labelled = torch.tensor(data.split.labelled, device=device)
    cf = torch.tensor(data.cf_targets, dtype=torch.float32, device=device) if data.cf_targets is not None else None
    has_cf = torch.tensor(data.has_cf, device=device)
    g = torch.Generator().manual_seed(0)
    bs = t.batch_size

    def step(x: torch.Tensor, idx: torch.Tensor) -> None:
        with amp():
            logits, cf_pred = model(x)
        m = labelled[idx]
        loss = F.binary_cross_entropy_with_logits(logits.float()[m], y[idx][m]) if m.any() else logits.sum() * 0
        if cf is not None and cf_pred is not None:
            h = has_cf[idx]
            loss = loss + t.alpha * ((cf_pred.float() - cf[idx]) ** 2).mean(1)[h].sum() / h.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    rates = []
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=g).numpy()
        sync()
        t0, n = time.perf_counter(), 0
        for s in range(0, len(perm) - bs + 1, bs):
            idx_np = np.sort(train[perm[s:s + bs]])
            x = train_batch(torch.from_numpy(np.asarray(data.images[idx_np])), g)
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            step(x, torch.from_numpy(idx_np).to(device))
            n += len(idx_np)
        sync()
        rates.append(n / (time.perf_counter() - t0))
    # compute ceiling: one augmented batch already on the GPU, the same number of steps
    idx_np = np.sort(train[:bs])
    x = train_batch(torch.from_numpy(np.asarray(data.images[idx_np])), g).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    idx = torch.from_numpy(idx_np).to(device)
    steps = max(1, len(train) // bs)
    ceiling = []
    for _ in range(max(2, min(epochs, 4))):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step(x, idx)
        sync()
        ceiling.append(steps * bs / (time.perf_counter() - t0))
    return _steady(rates), _steady(ceiling)


def nccl_evidence(ray_tmp: Path) -> tuple[str | None, int]:
    """(NCCL version, largest communicator size) from the NCCL_DEBUG=INFO lines of the Ray workers."""
    version, nranks = None, 0
    for f in ray_tmp.glob("ray/session_*/logs/*"):
        if not f.is_file() or f.suffix not in (".err", ".out", ".log"):
            continue
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if "NCCL" not in text:
            continue
        m = re.search(r"NCCL version (\S+)", text)
        version = version or (m.group(1) if m else None)
        nranks = max([nranks, *(int(k) for k in re.findall(r"\bnranks (\d+)", text))])
    return version, nranks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic-toys")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--ddp-gpus", type=int, default=0, help="GPUs (= workers) of the DDP trial (0: 2 if available, else 1)")
    ap.add_argument("--data-root", default=None, help="RAYSEARCH_HOME to use (default: a temporary one)")
    ap.add_argument("--step-timeout", type=float, default=1800, help="seconds per raysearch command")
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU to test this script (numbers meaningless)")
    a = ap.parse_args()

    why = cuda_unavailable()
    if why and not a.allow_cpu:
        print(why, file=sys.stderr)
        return NOT_RUN

    cuda = why is None
    device = torch.device("cuda:0" if cuda else "cpu")
    work = Path(tempfile.mkdtemp(prefix="rs-smoke-"))   # short: Ray's socket paths live under it
    root = a.data_root or str(work / "home")
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "RAY_TMPDIR": str(work),
           "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "INFO"), "NCCL_DEBUG_SUBSYS": os.environ.get("NCCL_DEBUG_SUBSYS", "INIT")}
    n_gpus = torch.cuda.device_count() if cuda else 0
    ddp = a.ddp_gpus or (2 if n_gpus >= 2 else 1)
    train_flags = ["--dataset", a.dataset, "--method", "mtl", "--backbone", a.backbone, "--weights", a.weights,
                   "--image-size", str(a.image_size), "--batch-size", str(a.batch_size), "--epochs", str(a.epochs),
                   "--patience", "0", "--data-root", root]
    from raysearch import cluster_cuda as cc
    from raysearch.config import RunConfig, TrainConfig

    where = (f"{torch.cuda.get_device_name(0)} x{n_gpus}, driver {cc.driver_version() or '?'}" if cuda
             else "CPU (--allow-cpu: plumbing test, numbers meaningless)")
    print(f"gpu-smoke: {where}; torch {torch.__version__}; {a.dataset}, mtl, {a.backbone}/{a.weights} "
          f"{a.image_size}px, batch {a.batch_size}, {a.epochs} epochs; work dir {work}", flush=True)
    rows: list[tuple[str, str]] = []
    failed = False

    # 1. raysearch train on the GPU
    log = work / "1-train.log"
    t0 = time.perf_counter()
    rc, out = _run(_cli("train", *train_flags, "--device", "cuda" if cuda else "cpu", "--json"), log, env, a.step_timeout)
    fit_ips = per_epoch = None
    if rc == 0:
        res = json.loads(out)
        rates = [h["images_per_s"] for h in res["history"] if "images_per_s" in h]
        per_epoch = statistics.median(h["images_per_s"] * h["epoch_time_s"] for h in res["history"])
        fit_ips = _steady(rates)
        rows.append((f"1 raysearch train (fit{', bf16 autocast + channels_last' if cuda else ', CPU'})",
                     f"val mAP {res['best_val_map']:.4f}, test mAP {res['test_map']:.4f}, {res['epochs_run']} epochs, "
                     f"{fit_ips:,.0f} img/s ({time.perf_counter() - t0:.0f} s incl. data prep)"))
    else:
        failed = True
        rows.append(("1 raysearch train", f"FAILED (exit {rc}), {log}:\n{_tail(log)}"))
    print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)

    # 2. the bare AMP loop on the same model and data (in this process; the data cache is step 1's)
    try:
        os.environ["RAYSEARCH_HOME"] = root
        from raysearch.train import prepare_training_data

        run = RunConfig(dataset=a.dataset, data_root=root, train=TrainConfig(
            method="mtl", backbone=a.backbone, weights=a.weights, image_size=a.image_size,
            batch_size=a.batch_size, epochs=a.epochs, patience=0))
        data = prepare_training_data(run)
        bare, ceiling = bare_amp_loop(run, data, device, max(2, a.epochs))
        ratio = f", fit/bare {fit_ips / bare:.2f}" if fit_ips else ""
        rows.append((f"2 bare {'AMP ' if cuda else ''}PyTorch loop, same model + input pipeline",
                     f"{bare:,.0f} img/s{ratio}"))
        rows.append(("  bare loop, one batch resident on the device", f"{ceiling:,.0f} img/s (compute ceiling)"))
    except Exception as e:  # noqa: BLE001 - reported, the next step still runs
        failed = True
        rows.append(("2 bare PyTorch loop", f"FAILED: {type(e).__name__}: {e}"))
    for r in rows[-2:] if not rows[-1][1].startswith("FAILED") else rows[-1:]:
        print(f"  {r[0]}: {r[1]}", flush=True)

    # 3. one DDP trial through raysearch tune (Ray Train TorchTrainer; NCCL on GPU workers)
    space = work / "space.yaml"
    space.write_text(json.dumps({   # JSON is YAML
        "description": "gpu-smoke: one fixed MTL configuration (the one of step 1)",
        "base": {"train": {"method": "mtl", "backbone": a.backbone, "weights": a.weights,
                           "image_size": a.image_size, "batch_size": a.batch_size, "epochs": a.epochs,
                           "patience": 0}},
        "params": {"train.alpha": {"type": "categorical", "choices": [TrainConfig.alpha]}},
    }))
    workers = ddp if cuda else 2
    cpus = max(workers, min(2 * workers, os.cpu_count() or 1))   # what a local Ray on this machine can hold
    log = work / "3-tune.log"
    cmd = _cli("tune", "--dataset", a.dataset, "--space", str(space), "--trials", "1", "--max-concurrent", "1",
               "--scheduler", "none", "--search", "random", "--gpus-per-trial", str(ddp if cuda else 0),
               "--workers-per-trial", str(workers), "--cpus-per-trial", str(cpus), "--no-wandb",
               "--data-root", root, "--storage", str(work / "runs"), "--name", "gpu-smoke-ddp", "--json")
    t0 = time.perf_counter()
    rc, out = _run(cmd, log, env, a.step_timeout)
    label = (f"3 DDP trial (raysearch tune, {workers} worker(s) x {'1 GPU' if cuda else 'CPU'}, "
             f"{'NCCL' if cuda else 'gloo'})")
    trial = (json.loads(out).get("trials") or [{}])[0] if rc == 0 and out.strip() else {}
    if rc == 0 and trial.get("stop_reason") in ("completed", "early_stopped"):
        ips = (trial["epochs_run"] * per_epoch / trial["train_time_s"]
               if per_epoch and trial.get("train_time_s") else float("nan"))
        version, nranks = nccl_evidence(work)
        if cuda and workers >= 2:
            nccl = (f"NCCL {version}, communicator of {nranks} ranks" if nranks >= 2
                    else "no NCCL communicator seen in the Ray logs")
            failed |= nranks < 2
        elif cuda:
            nccl = "1 GPU: TorchTrainer with the NCCL group, no cross-rank DDP (needs 2+ GPUs)"
        else:
            nccl = "gloo"
        rows.append((label, f"val mAP {trial['best_val_map']:.4f}, {trial['epochs_run']} epochs, "
                            f"~{ips:,.0f} img/s (all workers), {nccl} ({time.perf_counter() - t0:.0f} s)"))
    else:
        failed = True
        err = trial.get("error") or f"exit {rc}"
        rows.append((label, f"FAILED ({err}), {log}:\n{_tail(log)}"))
    print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)

    print("\ngpu-smoke summary")
    width = max(len(r[0]) for r in rows)
    for name, result in rows:
        print(f"  {name:<{width}}  {result}")
    print(f"gpu-smoke: {'FAILED' if failed else 'ok'} (logs in {work})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
