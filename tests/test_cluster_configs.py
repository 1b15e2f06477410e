"""Cluster configs a user deploys as they are: the AWS/GCP autoscaler YAMLs (checked with Ray's own
``validate_config``) and the KubeRay manifests (checked against the operator's CRD schemas).

Beyond "it parses", each test pins a property whose absence made a real sweep hang or fail:
trials on the head, GPU workers the autoscaler cannot plan from zero, workers without bucket
credentials, raysearch missing on autoscaled nodes, a torch CUDA build the GPU nodes' driver
cannot run (torch silently on the CPU), pods that pip-install torch at every start, a head whose
home volume it cannot write.  Pure YAML/schema/text work: no Ray cluster, no Docker.
"""
from __future__ import annotations

import copy
import functools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raysearch import cluster_cuda as cc

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CRDS = Path(__file__).resolve().parents[2] / "shared" / "kuberay-crds"   # read there, never copied
IMAGE = f"rayproject/ray:{ray.__version__}-{cc.PYTHON}-{cc.CUDA}"         # the installed Ray's image, the rule's CUDA
RAYSEARCH_IMAGE = re.compile(rf"[\w.:-]+/raysearch:[\w.]+-{cc.CUDA}")     # cluster/Dockerfile's, pushed
CLOUDS = ["aws-gpu.yaml", "gcp-gpu.yaml"]
# AWS instance types used by aws-gpu.yaml -> (vCPUs, GPUs), from the EC2 instance-type pages
AWS_HARDWARE = {"g5.2xlarge": (8, 1), "g5.12xlarge": (48, 4)}
GCP_STORAGE_SCOPES = {"https://www.googleapis.com/auth/devstorage.read_write",
                      "https://www.googleapis.com/auth/devstorage.full_control",
                      "https://www.googleapis.com/auth/cloud-platform"}


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / name).read_text())


def _prepared(name: str) -> dict[str, Any]:
    """What `ray up` validates: the config merged with the provider defaults (setup commands
    merged per node kind), then Ray's JSON schema and consistency checks."""
    cfg = prepare_config(_load(name))
    validate_config(cfg)
    return cfg


def _workers(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


# ---------------------------------------------------------------- Ray autoscaler (AWS, GCP)

@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_config_passes_rays_validator(name):
    cfg = _prepared(name)
    assert cfg["docker"]["image"] == IMAGE, "image must carry the Ray version raysearch pins"
    assert _workers(cfg), "no worker node types"
    # the global cap leaves room for every worker type at its own maximum
    assert cfg["max_workers"] >= sum(t["max_workers"] for t in _workers(cfg).values())


def test_rays_validator_rejects_what_it_should():
    """Control: the validator used above is not a no-op."""
    bad = _load("gcp-gpu.yaml")
    bad["available_node_types"]["gpu_1x"]["resources"] = {"GPU": "1"}     # must be an integer
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = _load("aws-gpu.yaml")
    bad["available_node_types"]["gpu_1x"]["min_wokers"] = 0                # typo'd key
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_head_runs_no_trials(name):
    cfg = _prepared(name)
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--num-cpus=0" in start, "a head started by hand must not offer CPUs either"
    assert "--include-dashboard=false" not in start.replace(" ", "")  # Ray Train's PG cleaner needs it
    spot = "InstanceMarketOptions" in head["node_config"] or head["node_config"].get("scheduling", {}).get("preemptible")
    assert not spot, "the head holds the Tune driver and the data owner: it must not be preemptible"


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_gpu_workers_scale_from_zero_with_explicit_resources(name):
    for node_type, t in _workers(_prepared(name)).items():
        res, nc = t["resources"], t["node_config"]
        assert t["min_workers"] == 0 and t["max_workers"] >= 1, node_type
        assert res.get("CPU", 0) >= 1 and res.get("GPU", 0) >= 1, f"{node_type}: {res} (the autoscaler plans from these)"
        if name.startswith("aws"):
            assert (res["CPU"], res["GPU"]) == AWS_HARDWARE[nc["InstanceType"]], node_type
        else:
            gpus = sum(a["acceleratorCount"] for a in nc["guestAccelerators"])
            assert res["GPU"] == gpus, f"{node_type}: resources say {res['GPU']} GPUs, guestAccelerators {gpus}"
        assert "--gpus all" in t["docker"]["worker_run_options"], f"{node_type}: container would not see the GPU"


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_workers_are_spot_or_preemptible(name):
    for node_type, t in _workers(_prepared(name)).items():
        nc = t["node_config"]
        if name.startswith("aws"):
            assert nc["InstanceMarketOptions"]["MarketType"] == "spot", node_type
        else:
            sched = nc["scheduling"]
            assert isinstance(sched, dict), f"{node_type}: GCP scheduling is an object, not a list"
            assert sched["preemptible"] is True and sched["onHostMaintenance"] == "TERMINATE", node_type


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_workers_have_bucket_credentials(name):
    """`ray up` attaches an instance profile / service account to the head only."""
    for node_type, t in _workers(_prepared(name)).items():
        nc = t["node_config"]
        if name.startswith("aws"):
            arn = nc["IamInstanceProfile"]["Arn"]
            assert re.fullmatch(r"arn:aws:iam::[\w-]+:instance-profile/[\w+=,.@-]+", arn), arn
        else:
            (sa,) = nc["serviceAccounts"]
            assert sa["email"].endswith(".iam.gserviceaccount.com")
            assert set(sa["scopes"]) & GCP_STORAGE_SCOPES, f"{node_type}: no Cloud Storage scope"


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_gpu_driver_setup(name):
    for node_type, t in _workers(_prepared(name)).items():
        nc = t["node_config"]
        if name.startswith("aws"):   # DLAMI with the NVIDIA driver + container toolkit
            assert "nvidia-driver" in nc["ImageId"], node_type
        else:                        # DLVM image asked to install the driver on first boot
            items = {i["key"]: i["value"] for i in nc["metadata"]["items"]}
            assert items.get("install-nvidia-driver") == "True", node_type
            assert "deeplearning-platform-release" in nc["disks"][0]["initializeParams"]["sourceImage"]


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_every_node_installs_raysearch_and_workers_need_no_home(name):
    cfg = _prepared(name)
    mounts = {remote: local for remote, local in cfg["file_mounts"].items()}
    (src,) = [r for r, local in mounts.items() if local in (".", "./")]
    for kind in ("head_setup_commands", "worker_setup_commands"):
        cmds = " ; ".join(cfg[kind])
        assert re.search(rf"pip install .*-e {re.escape(src)}\b", cmds), f"{kind} does not install raysearch"
        assert "ray[default" in cmds, f"{kind}: Ray without the dashboard extra (State API)"
    worker = " ; ".join(cfg["worker_setup_commands"] + cfg["initialization_commands"])
    assert not re.search(r"s3 sync|gsutil|rsync|\.raysearch", worker), \
        "workers must not copy RAYSEARCH_HOME: data reaches trials through the object store"


# ---------------------------------------------------------------- KubeRay (CRD schemas)

def _crd_schema(kind_file: str) -> dict[str, Any]:
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRD schemas not found at {CRDS} (the shared folder next to the repository)")
    return _crd_schema_cached(kind_file)


@functools.lru_cache(maxsize=None)
def _crd_schema_cached(kind_file: str) -> dict[str, Any]:
    crd = yaml.load((CRDS / kind_file).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert v1["served"], f"{kind_file}: v1 is not served"
    return _strict(v1["schema"]["openAPIV3Schema"])


def _strict(node: Any) -> Any:
    """The API server's view of a structural CRD schema as JSON Schema: unknown fields are errors
    (kubectl's strict field validation), ``nullable`` admits null, and a bare int-or-string
    gets its two types.  Everything else (types, enums, patterns, required) is kept as is."""
    if isinstance(node, list):
        return [_strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in ("enum", "default", "required", "x-kubernetes-validations") else _strict(v))
           for k, v in node.items() if k != "properties"}
    if "properties" in node:
        out["properties"] = {k: _strict(v) for k, v in node["properties"].items()}
        if "additionalProperties" not in out and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _list_type(validator, list_type, instance, schema):
    """``x-kubernetes-list-type``: ``set`` items and ``map`` keys must be unique (the API server
    rejects duplicates, e.g. two env vars of one name)."""
    if not isinstance(instance, list) or list_type == "atomic":
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen = set()
    for item in instance:
        key = (tuple(item.get(k) for k in keys) if list_type == "map" and isinstance(item, dict)
               else yaml.safe_dump(item, sort_keys=True))
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate entry {key!r} in a list of type {list_type}")
        seen.add(key)


def _cel_rules(validator, rules, instance, schema):
    """CEL rules (``x-kubernetes-validations``) cannot be evaluated offline: a manifest that sets
    such a field fails here rather than passing unchecked."""
    yield jsonschema.ValidationError(
        "sets a field guarded by CEL rules, which this offline check cannot evaluate: "
        + "; ".join(r["rule"] for r in rules))


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("int32")
def _int32(value: Any) -> bool:
    return not isinstance(value, int) or -2**31 <= value < 2**31


@_FORMATS.checks("int64")
def _int64(value: Any) -> bool:
    return not isinstance(value, int) or -2**63 <= value < 2**63


CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel_rules})


def _crd_errors(manifest: dict[str, Any], kind_file: str) -> list[str]:
    v = CRDValidator(_crd_schema(kind_file), format_checker=_FORMATS)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(manifest))


def _raycluster() -> dict[str, Any]:
    return _load("kuberay/raycluster.yaml")


def _rayjob() -> dict[str, Any]:
    return _load("kuberay/rayjob.yaml")


def test_kuberay_manifests_match_the_crd_schemas():
    rc, rj = _raycluster(), _rayjob()
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    assert (rj["apiVersion"], rj["kind"]) == ("ray.io/v1", "RayJob")
    assert _crd_errors(rc, "ray.io_rayclusters.yaml") == []
    assert _crd_errors(rj, "ray.io_rayjobs.yaml") == []


@pytest.mark.parametrize("mutate, expect", [
    (lambda m: m["spec"]["workerGroupSpecs"][0].update(minReplica=0), "Additional properties"),   # typo
    (lambda m: m["spec"]["workerGroupSpecs"][0].update(maxReplicas="8"), "is not of type 'integer'"),
    (lambda m: m["spec"]["workerGroupSpecs"][0].update(maxReplicas=2**31), "int32"),
    (lambda m: m["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}), "is not of type 'string'"),
    (lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
     .update(cpu="8 cores"), "does not match"),
    (lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(
        env=[{"name": "RAYSEARCH_HOME", "value": "/a"}, {"name": "RAYSEARCH_HOME", "value": "/b"}]), "duplicate"),
    (lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["securityContext"].update(fsGroup="100"),
     "is not of type 'integer'"),
    (lambda m: m["spec"]["autoscalerOptions"].update(upscalingMode="Fast"), "is not one of"),
    (lambda m: m["spec"]["workerGroupSpecs"][0].pop("groupName"), "'groupName' is a required property"),
    (lambda m: m["spec"].update(managedBy="ray.io/kuberay-operator"), "CEL rules"),
])
def test_kuberay_schema_check_is_not_weakened(mutate, expect):
    """Controls: the handling of x-kubernetes-* and int-or-string still catches real mistakes."""
    rc = copy.deepcopy(_raycluster())
    mutate(rc)
    errors = _crd_errors(rc, "ray.io_rayclusters.yaml")
    assert any(expect in e for e in errors), errors


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def test_raycluster_autoscales_gpu_workers_from_zero_with_a_trial_free_head():
    rc = _raycluster()
    spec = rc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = [g for g in spec["workerGroupSpecs"]
              if int(_containers(g)[0]["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1]
    assert gpu["minReplicas"] == 0 and gpu.get("replicas", 0) == 0 and gpu["maxReplicas"] >= 1
    res = _containers(gpu)[0]["resources"]
    assert int(res["limits"]["nvidia.com/gpu"]) == 1
    assert res.get("requests", {}).get("nvidia.com/gpu", 1) == res["limits"]["nvidia.com/gpu"]
    assert "cpu" in res["limits"], "Ray sizes the pod's CPUs from the limit"
    # credentials for --storage on every pod (IRSA / Workload Identity through one ServiceAccount)
    accounts = {g["template"]["spec"].get("serviceAccountName") for g in [head, *spec["workerGroupSpecs"]]}
    assert len(accounts) == 1 and None not in accounts, accounts
    # RAYSEARCH_HOME (prepared data, results) on a volume of the head only
    mounts = {m["mountPath"]: m["name"] for m in _containers(head)[0]["volumeMounts"]}
    vols = {v["name"]: v for v in head["template"]["spec"]["volumes"]}
    assert "persistentVolumeClaim" in vols[mounts["/home/ray/.raysearch"]]


def _script(c: dict[str, Any]) -> str:
    return " ".join(c.get("command", []) + c.get("args", []))


def test_raycluster_pods_run_the_prebuilt_image_and_start_ray_without_installing():
    """Pods start Ray from the image (cluster/Dockerfile): no clone, no pip, no torch download per
    scale-up; the CUDA check runs first (GPU pods: --require-gpu), KubeRay's `ray start` last."""
    rc = _raycluster()
    assert rc["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true", \
        "without it KubeRay replaces our command and the CUDA check never runs"
    spec = rc["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        (c,) = _containers(group)
        assert RAYSEARCH_IMAGE.fullmatch(c["image"]), f"{c['image']}: not cluster/Dockerfile's image (-{cc.CUDA} tag)"
        script = _script(c)
        assert not re.search(r"\bpip3? install|\bgit clone|\bconda install|uv pip", script), \
            f"{c['name']} installs at start: {script!r}"
        gpu = int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
        check = re.search(r"python -m raysearch\.cluster_cuda check( --require-gpu)?", script)
        assert check, f"{c['name']}: no CUDA check before ray start"
        assert bool(check.group(1)) == gpu, f"{c['name']}: --require-gpu exactly on GPU pods"
        assert script.rstrip().endswith("$KUBERAY_GEN_RAY_START_CMD"), "Ray must be started last"
        assert "set -e" in script, "a failed check must stop the pod"


def test_raycluster_head_can_write_its_home_volume():
    """Ray images run as uid 1000 / gid 100; a CSI volume's root is root-owned: fsGroup 100 makes
    the raysearch-home volume group-writable for the ray user."""
    head = _raycluster()["spec"]["headGroupSpec"]["template"]["spec"]
    sc = head.get("securityContext", {})
    assert sc.get("fsGroup") == 100, "raysearch-home would stay root-owned: prepare and the runs fail"
    assert sc.get("runAsUser", 1000) == 1000 and sc.get("runAsGroup", 100) in (100, None)
    assert sc.get("fsGroupChangePolicy") in (None, "OnRootMismatch", "Always")


def test_rayjob_runs_a_tune_sweep_on_the_same_cluster_and_cleans_up():
    import typer.main

    from raysearch.cli import app

    rj, rc = _rayjob(), _raycluster()
    spec = rj["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"] == rc["spec"], "rayjob.yaml's cluster drifted from raycluster.yaml"
    assert rj["metadata"]["annotations"] == rc["metadata"]["annotations"]
    words = shlex.split(spec["entrypoint"])
    at = words.index("raysearch")
    assert words[at + 1] == "tune"
    args = words[at + 2:]
    flags = {a.split("=")[0] for a in args if a.startswith("-")}
    tune = typer.main.get_command(app).commands["tune"]
    known = {o for p in tune.params for o in p.opts}
    assert flags <= known, f"entrypoint uses flags raysearch tune does not have: {sorted(flags - known)}"
    opt = {a: b for a, b in zip(args, args[1:]) if a.startswith("--")}
    assert opt["--address"] == "auto"
    assert int(opt["--max-concurrent"]) >= 1, "an autoscaled cluster needs an explicit --max-concurrent"
    assert re.match(r"(s3|gs)://", opt["--storage"]), "trials on other pods need shared storage"
    assert float(opt["--gpus-per-trial"]) == 1
    gpu = rc["spec"]["workerGroupSpecs"][0]
    assert float(opt["--cpus-per-trial"]) <= float(_containers(gpu)[0]["resources"]["limits"]["cpu"]), \
        "a trial must fit in one GPU pod"


# ---------------------------------------------------------------- CUDA build vs NVIDIA driver

DOCKERFILE = CLUSTER / "Dockerfile"


@dataclass
class GpuNode:
    """One GPU node type of one config, as the CUDA rule sees it."""

    where: str            # "aws-gpu.yaml:gpu_1x"
    node_image: str       # AMI / boot image; "" for a Kubernetes node pool
    platform: str         # aws | gcp | kuberay
    container_image: str
    build: str | None     # the torch CUDA build its install puts there (None: nothing installs torch)


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, ``\\`` continuations joined."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _dockerfile_build(text: str) -> str | None:
    runs = "\n".join(a for i, a in _dockerfile_instructions(text) if i == "RUN")
    return cc.install_build(runs)


def _cloud_gpu_nodes(name: str, cfg: dict[str, Any]) -> list[GpuNode]:
    platform = cfg["provider"]["type"]
    nodes = []
    for node_type, t in _workers(cfg).items():
        if t.get("resources", {}).get("GPU", 0) < 1:
            continue
        nc = t["node_config"]
        image = nc["ImageId"] if platform == "aws" else nc["disks"][0]["initializeParams"]["sourceImage"]
        docker = {**cfg.get("docker", {}), **t.get("docker", {})}
        container = docker.get("worker_image") or docker["image"]
        cmds = cfg.get("initialization_commands", []) + t.get("worker_setup_commands", cfg["worker_setup_commands"])
        build = cc.install_build("\n".join(cmds))
        if build is None and "raysearch:" in container:
            build = cc.container_image_cuda(container)  # the prebuilt image, nothing reinstalled
        nodes.append(GpuNode(f"{name}:{node_type}", image, platform, container, build))
    return nodes


def _kuberay_gpu_nodes(name: str, manifest: dict[str, Any], dockerfile_build: str | None) -> list[GpuNode]:
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    nodes = []
    for g in spec.get("workerGroupSpecs", []):
        for c in _containers(g):
            if int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) < 1:
                continue
            build = cc.install_build(_script(c))
            if build is None and "raysearch:" in c["image"]:
                tag = cc.container_image_cuda(c["image"])
                # the image is cluster/Dockerfile's: its tag and the Dockerfile's torch build must agree
                build = tag if tag == dockerfile_build else f"tag {tag} vs Dockerfile {dockerfile_build}"
            nodes.append(GpuNode(f"{name}:{g['groupName']}", "", "kuberay", c["image"], build))
    return nodes


def _all_gpu_nodes(configs: dict[str, dict[str, Any]], dockerfile: str) -> list[GpuNode]:
    nodes: list[GpuNode] = []
    build = _dockerfile_build(dockerfile)
    for name, cfg in configs.items():
        if cfg.get("kind") in ("RayCluster", "RayJob", "RayService"):
            nodes += _kuberay_gpu_nodes(name, cfg, build)
        elif cfg.get("provider", {}).get("type") in ("aws", "gcp"):
            nodes += _cloud_gpu_nodes(name, prepare_config(cfg))
    return nodes


def cuda_errors(nodes: list[GpuNode]) -> list[str]:
    """Every disagreement between a GPU node's driver, its torch build, its container image's CUDA
    and the rule (raysearch/cluster_cuda.py)."""
    errors = []
    kuberay_pool = next(n for n in cc.NODE_IMAGES if n.platform == "kuberay")
    for n in nodes:
        driver = kuberay_pool.driver if n.platform == "kuberay" else cc.image_driver(n.node_image)
        if n.platform != "kuberay" and driver is None:
            errors.append(f"{n.where}: image {n.node_image!r}: its NVIDIA driver is not known "
                          f"(add it to raysearch.cluster_cuda.NODE_IMAGES)")
            continue
        if n.build is None:
            errors.append(f"{n.where}: nothing installs torch on this GPU node type")
        elif n.build.startswith(("missing-index:", "tag ")):
            errors.append(f"{n.where}: torch build {n.build}: pinned without PyTorch's index for it / "
                          f"image tag and Dockerfile disagree")
        else:
            if n.build != cc.CUDA:
                errors.append(f"{n.where}: installs torch +{n.build}, the rule's build is +{cc.CUDA}")
            err = cc.pairing_error(driver, n.build)
            if err:
                errors.append(f"{n.where}: {err}")
        image_cuda = cc.container_image_cuda(n.container_image)
        if image_cuda is None:
            errors.append(f"{n.where}: container image {n.container_image!r} hides its CUDA version "
                          f"(use an explicit -cuXXX tag, e.g. {cc.ray_image()})")
        else:
            err = cc.pairing_error(driver, image_cuda)
            if err:
                errors.append(f"{n.where}: container image {n.container_image}: {err}")
    return errors


def _every_config() -> dict[str, dict[str, Any]]:
    names = sorted(str(f.relative_to(CLUSTER)) for f in CLUSTER.rglob("*.yaml"))
    return {n: _load(n) for n in names}


def test_every_gpu_node_type_runs_a_torch_build_its_driver_supports():
    configs = _every_config()
    assert set(configs) >= {*CLOUDS, "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "local-autoscale.yaml"}
    nodes = _all_gpu_nodes(configs, DOCKERFILE.read_text())
    covered = {n.where.split(":")[0] for n in nodes}
    # a config without GPU node types is named here, so a new GPU config cannot slip past unread
    assert set(configs) - covered == {"local-autoscale.yaml"}, sorted(set(configs) - covered)
    assert len(nodes) == 6, [n.where for n in nodes]   # aws 2 + gcp 2 + 1 GPU group in each manifest
    assert cuda_errors(nodes) == []
    assert {n.build for n in nodes} == {cc.CUDA}


def _aws(m):
    return m["aws-gpu.yaml"]


def _gcp(m):
    return m["gcp-gpu.yaml"]


def _set_gcp_image(m, image):
    for t in _gcp(m)["available_node_types"].values():
        t["node_config"]["disks"][0]["initializeParams"]["sourceImage"] = image


def _set_setup(m, cmd):
    _aws(m)["setup_commands"] = [cmd]


def _set_worker_image(m, name, image):
    spec = m[name]["spec"].get("rayClusterSpec", m[name]["spec"])
    spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] = image


_OLD = "projects/deeplearning-platform-release/global/images/family/common-cu124-ubuntu-2204-nvidia-550"


@pytest.mark.parametrize("mutate, expect", [
    # a GPU image whose driver is older than the build needs
    (lambda m, d: (_set_gcp_image(m, _OLD), d), "needs NVIDIA driver >= 570, not 550"),
    # the issue's failure: no CUDA index, so PyPI's default +cu130 (driver >= 580) on driver-570 images
    (lambda m, d: (_set_setup(m, 'pip install -q "ray[default,tune,train]==2.60.0" -e /home/ray/raysearch'), d),
     "needs NVIDIA driver >= 580"),
    # pinned +cu128 but the index given is cu126's: pip would not find it
    (lambda m, d: (_set_setup(m, "pip install --extra-index-url https://download.pytorch.org/whl/cu126 "
                                 "torch==2.14.1+cu128 -e /home/ray/raysearch"), d), "missing-index:cu128"),
    # a build the images could run but that is not the rule's one
    (lambda m, d: (_set_setup(m, "pip install --extra-index-url https://download.pytorch.org/whl/cu126 "
                                 "torch==2.14.1+cu126 -e /home/ray/raysearch"), d), "the rule's build is +cu128"),
    # Ray's -gpu alias: which CUDA (and which driver) it needs is invisible
    (lambda m, d: (_aws(m)["docker"].update(image="rayproject/ray:2.60.0-py311-gpu"), d), "hides its CUDA version"),
    (lambda m, d: (_gcp(m)["docker"].update(image="rayproject/ray:2.60.0-py311-cu130"), d),
     "container image rayproject/ray:2.60.0-py311-cu130: torch +cu130 needs NVIDIA driver >= 580"),
    # an AMI the table does not know
    (lambda m, d: (_aws(m)["available_node_types"]["gpu_1x"]["node_config"].update(ImageId="ami-0123456789abcdef0"), d),
     "its NVIDIA driver is not known"),
    # KubeRay: an image tag of another build than the Dockerfile's / the node pools' driver
    (lambda m, d: (_set_worker_image(m, "kuberay/raycluster.yaml", "YOUR-REGISTRY/raysearch:0.1.0-cu130"), d),
     "image tag and Dockerfile disagree"),
    # the Dockerfile on cu130 (PyPI's default torch) under the manifests' -cu128 tag
    (lambda m, d: (None, d.replace('"torch==2.14.1+cu128" "torchvision==0.29.1+cu128"', '"torch==2.14.1"')),
     "tag cu128 vs Dockerfile cu130"),
])
def test_cuda_check_catches_mismatches(mutate, expect):
    """Controls: each breaks one link between a GPU node's driver and its torch build."""
    configs = copy.deepcopy(_every_config())
    _, dockerfile = mutate(configs, DOCKERFILE.read_text())
    errors = cuda_errors(_all_gpu_nodes(configs, dockerfile))
    assert any(expect in e for e in errors), errors


def test_cuda_check_follows_the_rule_not_the_configs(monkeypatch):
    """The rule is the one place: change it (cu130 on images with driver >= 580) and every config
    that still installs cu128 on driver-570 images is reported."""
    monkeypatch.setattr(cc, "CUDA", "cu130")
    errors = cuda_errors(_all_gpu_nodes(_every_config(), DOCKERFILE.read_text()))
    wrong = {e.split(":")[0] for e in errors if "the rule's build is +cu130" in e}
    assert wrong == {*CLOUDS, "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"}, errors


def test_the_rules_tables_in_the_readme_match_the_module():
    """cluster/README.md shows the rule; these are its tables, compared with raysearch/cluster_cuda.py."""
    text = (CLUSTER / "README.md").read_text()
    section = text[text.index("## CUDA and NVIDIA drivers"):text.index("## The image")]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    drivers = {r[0]: int(r[1]) for r in rows if re.fullmatch(r"cu\d+", r[0])}
    assert drivers == cc.MIN_DRIVER
    images = [r for r in rows if len(r) == 4 and r[0] != "platform"]
    assert [(r[1], int(re.search(r"\d{3}", r[2]).group())) for r in images] == \
        [(n.name, n.driver) for n in cc.NODE_IMAGES]
    assert {r[3] for r in images} == {cc.CUDA}
    assert f"torch **{cc.TORCH}+{cc.CUDA}**" in section and f">= {cc.MIN_DRIVER[cc.CUDA]}**" in section


def test_node_images_table_matches_the_images_the_configs_boot():
    for n in _all_gpu_nodes(_every_config(), DOCKERFILE.read_text()):
        if n.platform != "kuberay":
            entry = cc.node_image(n.node_image)
            assert entry is not None and entry.platform == n.platform, n
            assert cc.image_driver(n.node_image) >= entry.driver


@pytest.mark.parametrize("cmd, build", [
    ('pip install -q "ray[default,tune,train]==2.60.0" -e /home/ray/raysearch', "cu130"),       # PyPI's default
    ("pip install torch==2.14.1", "cu130"),
    ("pip install --index-url https://download.pytorch.org/whl/cu126 torch==2.14.1", "cu126"),  # replaces PyPI
    ("python -m pip install --extra-index-url=https://download.pytorch.org/whl/cu128 'torch==2.14.1+cu128' .", "cu128"),
    ("pip install torch==2.14.1+cu128", "missing-index:cu128"),
    ("pip install wandb && python -m raysearch.cluster_cuda check", None),                     # no torch
    ("echo hi", None),
])
def test_install_build_reads_pip_commands(cmd, build):
    assert cc.install_build(cmd) == build


# ---------------------------------------------------------------- the node-side check

_WANT = f"{cc.TORCH}+{cc.CUDA}"


@pytest.mark.parametrize("facts, ok, expect", [
    (dict(torch_version=_WANT, torch_cuda="12.8", gpu_devices=0, driver=None, cuda_available=False,
          require_gpu=False), True, "no NVIDIA GPU on this node"),
    (dict(torch_version=_WANT, torch_cuda="12.8", gpu_devices=1, driver="570.133.20", cuda_available=True,
          require_gpu=True), True, "ok"),
    (dict(torch_version=_WANT, torch_cuda="12.8", gpu_devices=4, driver="595.91.07", cuda_available=True,
          require_gpu=True), True, "4 GPU(s): ok"),
    # the issue's case: PyPI's torch on a driver-570 image
    (dict(torch_version=f"{cc.TORCH}+cu130", torch_cuda="13.0", gpu_devices=1, driver="570.133.20",
          cuda_available=False, require_gpu=True), False, f"the cluster's build is {_WANT}"),
    (dict(torch_version=_WANT, torch_cuda="12.8", gpu_devices=1, driver="550.163.01", cuda_available=False,
          require_gpu=True), False, "needs NVIDIA driver >= 570, not 550"),
    (dict(torch_version=_WANT, torch_cuda="12.8", gpu_devices=0, driver=None, cuda_available=False,
          require_gpu=True), False, "no NVIDIA GPU in this container"),
    (dict(torch_version=_WANT, torch_cuda="12.8", gpu_devices=1, driver="575.51.03", cuda_available=False,
          require_gpu=True), False, "torch.cuda.is_available() is False"),
    (dict(torch_version=_WANT, torch_cuda="12.8", gpu_devices=1, driver="580.95.05", cuda_available=True,
          require_gpu=True, torchvision_version="0.29.1+cu130"), False, "torchvision 0.29.1+cu130"),
])
def test_node_check_diagnoses(facts, ok, expect):
    got_ok, line = cc.diagnose(**facts)
    assert got_ok is ok and expect in line and "\n" not in line, line


def test_node_check_runs_here_and_names_the_mismatch():
    """The real command (as the pods run it) on this machine's torch: one line, exit 0 only when the
    installed torch is the cluster's build."""
    import torch

    r = subprocess.run([sys.executable, "-m", "raysearch.cluster_cuda", "check"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    out = (r.stdout + r.stderr).strip()
    assert out.startswith("raysearch cluster_cuda: ") and len(out.splitlines()) == 1, out
    if torch.__version__ == _WANT:
        assert r.returncode == 0, out
    else:
        assert r.returncode == 1 and f"torch {torch.__version__} is installed" in out and _WANT in out, out
    r = subprocess.run([sys.executable, "-m", "raysearch.cluster_cuda", "pip-args"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and cc.install_build("pip install " + r.stdout) == cc.CUDA


# ---------------------------------------------------------------- cluster/Dockerfile (lint: no Docker here)

def dockerfile_errors(text: str) -> list[str]:
    ins = _dockerfile_instructions(text)
    errors = []
    froms = [a for i, a in ins if i == "FROM"]
    if froms != [cc.ray_image()]:
        errors.append(f"FROM {froms}: expected the one base {cc.ray_image()} (Ray {cc.RAY}, explicit CUDA tag)")
    runs = [a for i, a in ins if i == "RUN"]
    build = _dockerfile_build(text)
    if build != cc.CUDA:
        errors.append(f"torch build {build}, the rule's is {cc.CUDA}")
    if not any(f"torch=={cc.TORCH}+{cc.CUDA}" in r and f"torchvision=={cc.TORCHVISION}+{cc.CUDA}" in r
               and cc.index_url(cc.CUDA) in r for r in runs):
        errors.append(f"torch/torchvision not pinned to +{cc.CUDA} with {cc.index_url(cc.CUDA)}")
    copies = [a for i, a in ins if i == "COPY"]
    if not any(re.fullmatch(r"--chown=(ray|1000):(users|100) \. /home/ray/raysearch/?", a) for a in copies):
        errors.append("the repository is not copied to /home/ray/raysearch owned by ray:users (1000:100)")
    if not any(re.search(r"pip install .*\"ray\[default[^\"]*\]==" + re.escape(cc.RAY) + r"\".*-e /home/ray/raysearch", r)
               for r in runs):
        errors.append("raysearch is not installed (-e /home/ray/raysearch) with ray[default]==" + cc.RAY)
    if not any("python -m raysearch.cluster_cuda check" in r for r in runs):
        errors.append("no build-time check of the installed torch build")
    env = " ".join(a for i, a in ins if i == "ENV")
    m = re.search(r'NVIDIA_REQUIRE_CUDA="?cuda>=(\d+)\.(\d+)"?', env)
    if not m or f"cu{m.group(1)}{m.group(2)}" != cc.CUDA:
        errors.append(f"NVIDIA_REQUIRE_CUDA does not require the build's CUDA ({cc.CUDA})")
    users = [a for i, a in ins if i == "USER"]
    if users and users[-1] not in ("ray", "1000"):
        errors.append(f"runs as USER {users[-1]}, not the Ray image's ray (1000)")
    return errors


def test_dockerfile_builds_the_rules_image():
    assert dockerfile_errors(DOCKERFILE.read_text()) == []
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignore), "the build context would carry .venv and .git"


@pytest.mark.parametrize("old, new, expect", [
    (f"FROM {IMAGE}", f"FROM rayproject/ray:{ray.__version__}-py311-gpu", "expected the one base"),
    ('"torch==2.14.1+cu128" "torchvision==0.29.1+cu128"', '"torch==2.14.1" "torchvision==0.29.1"',
     "torch build cu130"),
    ("COPY --chown=ray:users .", "COPY .", "owned by ray:users"),
    ('cuda>=12.8', 'cuda>=13.0', "NVIDIA_REQUIRE_CUDA"),
    ("&& python -m raysearch.cluster_cuda check", "", "no build-time check"),
])
def test_dockerfile_lint_catches_mistakes(old, new, expect):
    text = DOCKERFILE.read_text()
    assert old in text
    errors = dockerfile_errors(text.replace(old, new))
    assert any(expect in e for e in errors), errors
