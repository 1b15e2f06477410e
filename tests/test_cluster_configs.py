"""Cluster configs a user deploys as they are: the AWS/GCP autoscaler YAMLs (checked with Ray's own
``validate_config``) and the KubeRay manifests (checked against the operator's CRD schemas).

Beyond "it parses", each test pins a property whose absence made a real sweep hang or fail:
trials on the head, GPU workers the autoscaler cannot plan from zero, workers without bucket
credentials, raysearch missing on autoscaled nodes.  Pure YAML/schema work: no Ray cluster.
"""
from __future__ import annotations

import copy
import functools
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CRDS = Path(__file__).resolve().parents[2] / "shared" / "kuberay-crds"   # read there, never copied
IMAGE = f"rayproject/ray:{ray.__version__}-py311-gpu"                     # the installed Ray's image
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
    (lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "RAYSEARCH_REF", "value": "other"}), "duplicate"),
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


def test_raycluster_pods_install_raysearch_and_start_ray():
    rc = _raycluster()
    assert rc["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true", \
        "without it KubeRay replaces our command and raysearch is never installed"
    spec = rc["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        (c,) = _containers(group)
        assert c["image"] == IMAGE
        script = " ".join(c.get("command", []) + c.get("args", []))
        assert 'import raysearch' in script and re.search(r"pip install .*-e /home/ray/raysearch", script)
        assert "ray[default" in script, "Ray without the dashboard extra (State API)"
        assert script.rstrip().endswith("$KUBERAY_GEN_RAY_START_CMD"), "Ray must be started last"
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["RAYSEARCH_REPO"] and env["RAYSEARCH_REF"]


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
