"""Which torch CUDA build runs on the cluster, and which NVIDIA driver that build needs: the one place
where that is decided.

A torch wheel carries its own CUDA runtime; what the machine must supply is an NVIDIA driver at least
as new as that runtime.  Plain ``pip install torch==2.14.1`` on Linux gets the ``+cu130`` build,
which needs driver >= 580: on a node with driver 570 ``torch.cuda.is_available()`` is False and
training silently runs on the CPU.  So every cluster config installs the build named here, from
PyTorch's index for it (``--extra-index-url https://download.pytorch.org/whl/cu128``, with the
local version pinned: ``torch==2.14.1+cu128``), and every GPU node image offers a driver at least
``MIN_DRIVER[CUDA]``.  ``tests/test_cluster_configs.py`` reads every file under ``cluster/`` and
fails when an image's driver and the torch build disagree; ``cluster/README.md`` shows the same
tables.

On a node, ``python -m raysearch.cluster_cuda check [--require-gpu]`` verifies it for real
(installed build, driver, ``torch.cuda.is_available()``) and exits 1 with one line when they
disagree: the cluster configs run it before Ray starts, so a bad pairing stops the node instead of
training on its CPU.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

#: the cluster's torch build: version, its torchvision, and the CUDA tag of both
TORCH = "2.14.1"
TORCHVISION = "0.29.1"
CUDA = "cu128"
#: the Ray (and Python) of the cluster images: rayproject/ray:<RAY>-<PYTHON>-<CUDA>
RAY = "2.60.0"
PYTHON = "py311"
#: what ``pip install torch==<TORCH>`` from PyPI installs on Linux x86_64 (no CUDA-specific index)
PYPI_DEFAULT_CUDA = "cu130"

#: torch CUDA build -> minimum NVIDIA Linux driver branch: the driver each CUDA release ships with
#: (NVIDIA's CUDA Toolkit release notes, "Toolkit Driver Version", Linux x86_64).  CUDA's
#: minor-version compatibility would let a cu12x build start on any driver >= 525, with features
#: missing (no PTX JIT); the rule does not rely on it.
MIN_DRIVER: dict[str, int] = {
    "cu118": 520,
    "cu121": 530,
    "cu124": 550,
    "cu126": 560,
    "cu128": 570,
    "cu129": 575,
    "cu130": 580,
}


@dataclass(frozen=True)
class NodeImage:
    """A GPU node image the cluster configs use, and the driver branch it guarantees (its floor)."""

    platform: str     # aws | gcp | kuberay
    name: str         # what cluster/README.md calls it
    pattern: str | None  # regex over a config's image reference (full match); None: not named in a config
    driver: int       # the lowest driver branch the image can come with
    note: str         # where that figure comes from


#: every GPU node image the configs may boot.  A ``-nvidia-NNN`` suffix (GCP Deep Learning VM
#: families) names the driver itself; the others' floors are stated here, from their release notes.
NODE_IMAGES: tuple[NodeImage, ...] = (
    NodeImage("aws", "DLAMI Base OSS Nvidia Driver GPU (Ubuntu 22.04), latest",
              r"resolve:ssm:/aws/service/deeplearning/ami/x86_64/"
              r"base-oss-nvidia-driver-gpu-ubuntu-22\.04/latest/ami-id",
              570, "AWS DLAMI release notes (Base OSS Nvidia Driver GPU AMIs): 580.x in late-2025 releases, "
                   "595.x in 2026 ones; `latest` only moves forward; 570 kept as a conservative floor"),
    NodeImage("gcp", "Deep Learning VM family common-cu128-ubuntu-2204-nvidia-570",
              r"projects/deeplearning-platform-release/global/images/family/"
              r"common-cu\d+-ubuntu-\d+-nvidia-(?P<driver>\d{3})",
              570, "the family name's -nvidia-570: the driver the image installs on first boot"),
    NodeImage("kuberay", "EKS: Amazon Linux 2023 / Bottlerocket NVIDIA AMI; GKE: gpu-driver-version=latest",
              None, 570, "the node pool's driver, not the manifest's: create the pool with a driver >= the "
                   "build's minimum (cluster/README.md); pods check it before `ray start`"),
)


def index_url(cuda: str = CUDA) -> str:
    """PyTorch's wheel index for one CUDA build (``cpu`` for the CPU-only one)."""
    return f"https://download.pytorch.org/whl/{cuda}"


def pip_torch_args(cuda: str = CUDA) -> list[str]:
    """The pip arguments that install the cluster's torch build: its index plus pinned local versions."""
    return ["--extra-index-url", index_url(cuda), f"torch=={TORCH}+{cuda}", f"torchvision=={TORCHVISION}+{cuda}"]


def min_driver(cuda: str) -> int:
    if cuda not in MIN_DRIVER:
        raise KeyError(f"unknown torch CUDA build {cuda!r}; known: {', '.join(MIN_DRIVER)}")
    return MIN_DRIVER[cuda]


def pairing_error(driver: int | None, cuda: str) -> str | None:
    """None when a node with driver branch ``driver`` runs the ``cuda`` build; else why not."""
    if cuda == "cpu":
        return "a CPU-only torch build on a GPU node: trials would never use the GPU"
    if cuda not in MIN_DRIVER:
        return f"unknown torch CUDA build {cuda!r} (known: {', '.join(MIN_DRIVER)})"
    if driver is None:
        return "the image's NVIDIA driver is not known (add it to raysearch.cluster_cuda.NODE_IMAGES)"
    if driver < MIN_DRIVER[cuda]:
        return (f"torch +{cuda} needs NVIDIA driver >= {MIN_DRIVER[cuda]}, not {driver}: install a build "
                f"whose minimum is <= {driver} or boot an image with a newer driver")
    return None


def node_image(image: str) -> NodeImage | None:
    """The ``NODE_IMAGES`` entry an image reference matches, or None."""
    for n in NODE_IMAGES:
        if n.pattern is not None and re.fullmatch(n.pattern, image):
            return n
    return None


def image_driver(image: str) -> int | None:
    """The driver branch a GPU node image guarantees: its ``-nvidia-NNN`` suffix when it has one,
    else the ``NODE_IMAGES`` floor; None for an image the table does not know."""
    m = re.search(r"-nvidia-(\d{3})$", image)
    if m:
        return int(m.group(1))
    n = node_image(image)
    return n.driver if n else None


def container_image_cuda(image: str) -> str | None:
    """The CUDA an image is built on, from its tag: ``cu128`` for ``rayproject/ray:2.60.0-py311-cu128``
    and for cluster/Dockerfile's ``REGISTRY/raysearch:0.1.0-cu128``; None for Ray's ``-gpu`` tag (an
    alias that hides the CUDA version), ``-cpu`` or any other image."""
    m = (re.fullmatch(r"rayproject/ray:[\w.]+-py\d+-(cu\d+)", image)
         or re.fullmatch(r"(?:[\w.:-]+/)*raysearch:[\w.]+-(cu\d+)", image))
    return m.group(1) if m else None


def ray_image() -> str:
    """The stock Ray image the cluster configs start from."""
    return f"rayproject/ray:{RAY}-{PYTHON}-{CUDA}"


_TORCH_REQ = re.compile(r"torch(?:\[[^\]]*\])?\s*===?\s*(?P<version>[\w.]+)(?:\+(?P<local>\w+))?")
_INDEX = re.compile(r"https://download\.pytorch\.org/whl/(?P<cuda>cu\d+|cpu)/?")


def install_build(command: str) -> str | None:
    """The torch CUDA build a shell command's ``pip install`` puts on the node: None when no pip
    install there installs torch (neither named nor pulled in as a dependency of an ``-e``/path
    install); the pinned ``+cuNNN`` local version when the command names it with its index; the
    build of a PyTorch ``--index-url`` that replaces PyPI; otherwise PyPI's default build.  Of
    several installs, a later one changes the build only when it names torch or upgrades: a
    dependency already satisfied stays."""
    found: str | None = None
    for part in re.split(r"&&|;|\|\||\n", command):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        if "install" not in words or not any(w in ("pip", "pip3") or w.endswith("/pip") for w in words):
            continue
        args = words[words.index("install") + 1:]
        indexes: dict[str, str] = {}
        torch_req = None
        installs_project = False
        i = 0
        while i < len(args):
            a = args[i]
            opt, _, val = a.partition("=")
            if opt in ("--index-url", "-i", "--extra-index-url") and not val and i + 1 < len(args):
                val, i = args[i + 1], i + 1
            if opt in ("--index-url", "-i", "--extra-index-url"):
                m = _INDEX.fullmatch(val)
                if m:
                    indexes[m.group("cuda")] = "extra" if opt == "--extra-index-url" else "main"
            elif _TORCH_REQ.fullmatch(a):
                torch_req = _TORCH_REQ.fullmatch(a)
            elif a == "torch":
                torch_req = None
                installs_project = True
            elif a in ("-e", "--editable") or a.startswith(("/", ".")) or "raysearch" in a:
                installs_project = True
            i += 1
        if torch_req is None and not installs_project:
            continue
        upgrade = any(w in ("-U", "--upgrade", "--force-reinstall") for w in args)
        if torch_req is None and found is not None and not upgrade:
            continue  # torch is already installed: pulled in as a dependency, it is not replaced
        main = [c for c, kind in indexes.items() if kind == "main"]
        if torch_req is not None and torch_req.group("local"):
            local = torch_req.group("local")
            found = local if local in indexes else f"missing-index:{local}"
        elif main:
            found = main[0]
        else:
            found = PYPI_DEFAULT_CUDA
    return found


# ----------------------------------------------------------------------------- on a node

def diagnose(torch_version: str, torch_cuda: str | None, gpu_devices: int, driver: str | None,
             cuda_available: bool, require_gpu: bool, torchvision_version: str | None = None) -> tuple[bool, str]:
    """(ok, one line) for the facts of one node: the installed torch (``torch.__version__``,
    ``torch.version.cuda``), the NVIDIA devices in the container, the driver version and whether
    torch can use CUDA."""
    build = "cpu" if not torch_cuda else "cu" + torch_cuda.replace(".", "")
    want = f"{TORCH}+{CUDA}"
    if torch_version != want:
        return False, (f"torch {torch_version} is installed, the cluster's build is {want} "
                       f"(pip install {' '.join(pip_torch_args())}; see cluster/README.md)")
    if torchvision_version is not None and torchvision_version != f"{TORCHVISION}+{CUDA}":
        return False, f"torchvision {torchvision_version} is installed, the cluster's is {TORCHVISION}+{CUDA}"
    if gpu_devices == 0:
        if require_gpu:
            return False, (f"torch {torch_version}: no NVIDIA GPU in this container (/dev/nvidia0 absent) on a "
                           f"GPU node: is the container started with the GPU (--gpus all, nvidia.com/gpu)?")
        return True, f"torch {torch_version}: no NVIDIA GPU on this node, nothing more to check"
    if driver is None:
        return False, f"torch {torch_version}: {gpu_devices} NVIDIA device(s) but no driver version readable"
    branch = int(driver.split(".")[0])
    err = pairing_error(branch, build)
    if err:
        return False, f"NVIDIA driver {driver}: {err}"
    if not cuda_available:
        return False, (f"torch {torch_version} on NVIDIA driver {driver} (>= {MIN_DRIVER[build]}): "
                       f"torch.cuda.is_available() is False all the same")
    return True, (f"torch {torch_version} on NVIDIA driver {driver} (>= {MIN_DRIVER[build]} needed), "
                  f"{gpu_devices} GPU(s): ok")


def driver_version() -> str | None:
    """The loaded NVIDIA kernel driver's version (``570.133.20``), or None."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        text = ""
    m = re.search(r"Kernel Module(?: for \w+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    if m:
        return m.group(1)
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout.split()
            return out[0] if out else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def gpu_devices() -> int:
    return sum(1 for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raysearch.cluster_cuda",
                                 description="Check this node's torch build and NVIDIA driver against the cluster rule.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="exit 1 with one line when the installed torch, the driver and the GPU disagree")
    c.add_argument("--require-gpu", action="store_true", help="fail when no NVIDIA GPU is visible (GPU node types)")
    sub.add_parser("pip-args", help="print the pip arguments that install the cluster's torch build")
    a = ap.parse_args(argv)
    if a.cmd == "pip-args":
        print(shlex.join(pip_torch_args()))
        return 0
    import torch

    try:
        import torchvision
        tv = torchvision.__version__
    except ImportError:
        tv = None
    devices = gpu_devices()
    ok, line = diagnose(torch.__version__, torch.version.cuda, devices, driver_version() if devices else None,
                        bool(devices) and torch.cuda.is_available(), a.require_gpu, tv)
    print(f"raysearch cluster_cuda: {line}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
