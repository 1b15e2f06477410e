"""Ray's private names live in :mod:`raysearch._ray_compat` only, and what they rely on still holds.

Two kinds of test, all import/inspect checks (no Ray instance is started):

* a checker (AST plus a few text patterns) over every module of ``raysearch`` but ``_ray_compat``
  and over ``tests/ray_cluster.py`` / ``tests/conftest.py``: no private Ray module, name, hook,
  attribute or environment variable appears there.  Negative controls prove it flags each kind.
* one contract test per entry of ``_ray_compat``: the Ray internals it uses still exist with the
  shape it relies on.  A failure names the broken assumption and the entry to fix.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import pickle
import re
import textwrap
import types
from pathlib import Path

import pytest

from raysearch import _ray_compat

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "raysearch"
COMPAT = PKG / "_ray_compat.py"
CHECKED_TESTS = [REPO / "tests" / "ray_cluster.py", REPO / "tests" / "conftest.py"]

#: private Ray names raysearch has relied on (wherever they are spelled: attribute, name, keyword,
#: getattr string): only _ray_compat may use them
PRIVATE_RAY_NAMES = frozenset({
    "_local_tuner", "_run_config", "_experiment_analysis", "_WandbLoggingActor", "_start_logging_actor",
    "_signal_logging_actor_stop", "_QueueItem", "_clean_log", "_force_on_current_node", "_trial_logging_futures",
    "_trial_logging_actors", "_trial_queues", "_logging_future_to_trial", "_remote_logger_class",
    "_logger_actor_cls", "_exclude_results", "_handle_result", "_handle_checkpoint", "_temp_dir", "_global_node",
    "_private", "_internal", "_common", "_raylet",
})
#: environment variables Ray reads but does not document (its internal config is ``RAY_<lowercase>``)
PRIVATE_RAY_ENV = frozenset({_ray_compat.TRAIN_HEALTH_CHECK_ENV, _ray_compat.GCS_WAIT_ENV})
TEXT_PATTERNS = [
    (re.compile(r"\bray(?:[./]\w+)*[./]_[A-Za-z]\w*"), "a private Ray module path"),
    (re.compile(r"\bRAY_[a-z]\w*"), "Ray's internal config (a RAY_<lowercase> environment variable)"),
    (re.compile(r"ray_address_to_api_server_url|ray\.dashboard\.utils"), "Ray's dashboard internals"),
    *[(re.compile(re.escape(name)), "a private Ray environment variable") for name in sorted(PRIVATE_RAY_ENV)],
]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _ray_root(node: ast.AST) -> bool:
    """``node`` is an attribute chain rooted at the name ``ray`` (``ray.init``, ``ray.util.x``)."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "ray"


def ray_private_members(cls: type) -> frozenset[str]:
    """Private names (class members and ``self._x`` attributes) that Ray's classes in ``cls``'s MRO define."""
    out: set[str] = set()
    for klass in cls.__mro__:
        if not (klass.__module__ or "").split(".")[0] == "ray":
            continue
        out |= {n for n in vars(klass) if _is_private(n)}
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        out |= {m for m in re.findall(r"\bself\.(_\w+)", src) if _is_private(m)}
    return frozenset(out)


def violations(source: str, where: str, namespace: dict | None = None) -> list[str]:
    """Every private Ray use in ``source``: ``where:line: what``.  ``namespace`` (the module's
    globals) resolves its classes, so that ``self._x`` is flagged where ``_x`` is a Ray base
    class's private member."""
    found: list[str] = []

    def flag(node: ast.AST | int, what: str) -> None:
        line = node if isinstance(node, int) else getattr(node, "lineno", 0)
        found.append(f"{where}:{line}: {what}")

    for i, text in enumerate(source.splitlines(), 1):
        for pattern, what in TEXT_PATTERNS:
            m = pattern.search(text)
            if m:
                flag(i, f"{what}: {m.group(0)!r}")
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "ray" and any(_is_private(p) for p in parts):
                    flag(node, f"import of a private Ray module {a.name!r}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "ray":
                if any(_is_private(p) for p in parts):
                    flag(node, f"import from a private Ray module {node.module!r}")
                for a in node.names:
                    if _is_private(a.name):
                        flag(node, f"private Ray name {a.name!r} imported from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_RAY_NAMES:
            flag(node, f"private Ray attribute {node.attr!r}")
        elif isinstance(node, ast.Name) and node.id in PRIVATE_RAY_NAMES:
            flag(node, f"private Ray name {node.id!r}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in PRIVATE_RAY_NAMES:
            flag(node, f"private Ray name {node.value!r} as a string (getattr?)")
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg and (kw.arg in PRIVATE_RAY_NAMES or (_is_private(kw.arg) and _ray_root(node.func))):
                    flag(kw.value, f"private Ray keyword {kw.arg}=")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in PRIVATE_RAY_NAMES:
            flag(node, f"override of a private Ray hook {node.name!r}")
    for cdef in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        cls = (namespace or {}).get(cdef.name)
        if not isinstance(cls, type):
            continue
        private = ray_private_members(cls)
        for node in ast.walk(cdef):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in ("self", "cls") and node.attr in private):
                flag(node, f"{cdef.name} uses {node.attr!r}, private to its Ray base class")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in private:
                flag(node, f"{cdef.name} overrides {node.name!r}, private to its Ray base class")
    return found


def _imports_ray(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ray" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "ray":
            return True
    return False


def checked_files() -> list[Path]:
    files = sorted(p for p in PKG.rglob("*.py") if p != COMPAT)
    assert len(files) > 20, "raysearch's modules not found: the check would pass vacuously"
    return files + CHECKED_TESTS


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.timeout(300)
def test_no_private_ray_name_outside_ray_compat():
    problems = []
    for path in checked_files():
        source = path.read_text()
        namespace = None
        # the classes of modules that use Ray: resolved, so a Ray base class's private members count
        if path.is_relative_to(PKG) and _imports_ray(ast.parse(source)):
            namespace = vars(importlib.import_module(_module_name(path)))
        problems += violations(source, str(path.relative_to(REPO)), namespace)
    assert not problems, ("private Ray names outside raysearch/_ray_compat.py (move each behind a function there, "
                          "with a contract test in tests/test_ray_compat.py):\n" + "\n".join(problems))


@pytest.mark.parametrize("snippet, expected", [
    ("import ray._private.services as s\n", "private Ray module"),
    ("from ray.train.v2._internal.constants import X\n", "private Ray module"),
    ("from ray.air.integrations.wandb import _WandbLoggingActor\n", "private Ray name '_WandbLoggingActor'"),
    ("from ray.air.util.node import _force_on_current_node\n", "private Ray name"),
    ("tuner._local_tuner.get_run_config().callbacks = []\n", "private Ray attribute '_local_tuner'"),
    ("t = getattr(grid, '_experiment_analysis', None)\n", "as a string"),
    ("import ray\nray.init(_temp_dir='/tmp/x')\n", "private Ray keyword _temp_dir="),
    ("import ray\nray.init(_system_config={})\n", "private Ray keyword _system_config="),
    ("import os\nos.environ['RAY_TRAIN_HEALTH_CHECK_INTERVAL_S'] = '1'\n", "private Ray environment variable"),
    ("import os\nos.environ.setdefault('RAY_gcs_rpc_timeout_s', '9')\n", "Ray's internal config"),
    ("# see ray/_private/node.py\nx = 1\n", "private Ray module path"),
    ("from ray.dashboard.utils import ray_address_to_api_server_url\n", "dashboard internals"),
    ("class C:\n    def _signal_logging_actor_stop(self, trial):\n        pass\n", "private Ray hook"),
])
def test_checker_flags_each_kind_of_private_use(snippet, expected):
    found = violations(snippet, "<snippet>")
    assert any(expected in f for f in found), f"not flagged ({expected}): {snippet!r} -> {found}"


def test_checker_flags_a_ray_base_class_private_member():
    """Negative control of the class check: a subclass of a Ray class touching its private state."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    private = ray_private_members(WandbLoggerCallback)
    assert {"_trial_queues", "_start_logging_actor", "_upload_timeout"} <= private, private
    snippet = textwrap.dedent("""
        from ray.air.integrations.wandb import WandbLoggerCallback

        class Mine(WandbLoggerCallback):
            def log_trial_end(self, trial, failed=False):
                return self._upload_timeout
    """)
    ns: dict = {}
    exec(compile(snippet, "<snippet>", "exec"), ns)
    found = violations(snippet, "<snippet>", ns)
    assert any("'_upload_timeout', private to its Ray base class" in f for f in found), found


def test_checker_passes_clean_code():
    clean = "import ray\nfrom ray import tune\nray.init(num_cpus=1)\nx = ray.util.get_node_ip_address()\n"
    assert violations(clean, "<clean>") == []


# --- contracts: one per _ray_compat entry ---------------------------------------------------------

def _fail(assumption: str, entry: str) -> str:
    return (f"Ray upgrade broke an assumption: {assumption}. Fix raysearch._ray_compat.{entry} "
            f"(and this contract test), then widen the Ray pin in pyproject.toml")


def _ray_source(relpath: str) -> str:
    import ray

    path = Path(ray.__file__).parent / relpath
    assert path.is_file(), _fail(f"Ray's source file {relpath} is gone", "the entry that cites it")
    return path.read_text()


def _ray_sources_containing(needle: str) -> list[Path]:
    import ray

    return [p for p in Path(ray.__file__).parent.rglob("*.py") if needle in p.read_text(errors="replace")]


def _params(fn) -> list[str]:
    """A function's parameter names, without the ``_ray_trace_ctx`` that ``ray.remote`` injects into
    an actor class's methods once any test has made the class remote."""
    return [p for p in inspect.signature(fn).parameters if p != "_ray_trace_ctx"]


def test_contract_set_restored_callbacks(tmp_path):
    from ray import tune
    from ray.tune.impl.tuner_internal import TunerInternal

    entry = "set_restored_callbacks"
    assert "_local_tuner" in inspect.getsource(tune.Tuner.__init__), _fail("Tuner no longer has _local_tuner", entry)
    assert "self._local_tuner" in inspect.getsource(tune.Tuner.restore) or \
        "_TUNER_INTERNAL" in inspect.getsource(tune.Tuner.restore) or \
        "TunerInternal" in inspect.getsource(tune.Tuner.restore), \
        _fail("Tuner.restore no longer builds a TunerInternal", entry)
    assert "return self._run_config" in inspect.getsource(TunerInternal.get_run_config), \
        _fail("TunerInternal.get_run_config() no longer returns the run config it fits with", entry)
    assert "self._run_config" in inspect.getsource(TunerInternal), _fail("TunerInternal lost _run_config", entry)
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(storage_path=str(tmp_path), name="c"))
    cbs = [tune.Callback()]
    _ray_compat.set_restored_callbacks(tuner, cbs)
    assert tuner._local_tuner.get_run_config().callbacks is cbs, \
        _fail("RunConfig.callbacks of Tuner._local_tuner.get_run_config() is not mutable", entry)


def test_contract_result_grid_trials():
    from types import SimpleNamespace

    from ray.tune import ResultGrid

    entry = "result_grid_trials"
    init = inspect.getsource(ResultGrid.__init__)
    assert "self._experiment_analysis = experiment_analysis" in init and \
        "for trial in self._experiment_analysis.trials" in init, \
        _fail("ResultGrid no longer builds one Result per trial of _experiment_analysis.trials, in order", entry)
    analysis = SimpleNamespace(trials=[])
    grid = ResultGrid(analysis)
    assert grid._experiment_analysis is analysis, _fail("ResultGrid lost _experiment_analysis", entry)
    assert _ray_compat.result_grid_trials(grid, 0) == []
    assert _ray_compat.result_grid_trials(object(), 2) == [None, None]


def test_contract_train_health_check_interval(monkeypatch):
    entry = "set_train_health_check_interval"
    name = _ray_compat.TRAIN_HEALTH_CHECK_ENV
    try:
        constants = importlib.import_module("ray.train.v2._internal.constants")
    except ImportError as e:
        pytest.fail(_fail(f"Ray Train V2's constants module moved ({e})", entry))
    assert getattr(constants, "HEALTH_CHECK_INTERVAL_S_ENV_VAR", None) == name, \
        _fail(f"Ray Train no longer names its controller poll interval {name}", entry)
    assert name in getattr(constants, "ENV_VARS_TO_PROPAGATE", ()), \
        _fail(f"Ray Train no longer propagates {name} from the caller of fit() to its controller", entry)
    readers = [p for p in _ray_sources_containing("HEALTH_CHECK_INTERVAL_S_ENV_VAR")
               if re.search(r"(getenv|environ\.get)\(\s*HEALTH_CHECK_INTERVAL_S_ENV_VAR", p.read_text())]
    assert readers, _fail(f"nothing in Ray reads {name} from the environment any more", entry)
    monkeypatch.delenv(name, raising=False)
    _ray_compat.set_train_health_check_interval(0.25)
    assert os.environ[name] == "0.25"


def test_contract_gcs_wait_env():
    entry = "GCS_WAIT_ENV"
    name = _ray_compat.GCS_WAIT_ENV
    readers = [p for p in _ray_sources_containing(name)
               if re.search(r"(getenv|environ\.get)\(\s*['\"]" + re.escape(name), p.read_text())]
    assert readers, _fail(f"Ray no longer reads {name} (the GCS wait) from the environment", entry)


def test_contract_temp_dir_init_kwargs():
    import ray

    entry = "temp_dir_init_kwargs"
    (key,) = _ray_compat.temp_dir_init_kwargs("/x")
    init = inspect.getsource(inspect.unwrap(ray.init))
    assert re.search(rf"kwargs\.pop\(\s*['\"]{key}['\"]", init) or key in inspect.signature(ray.init).parameters, \
        _fail(f"ray.init no longer takes {key}=", entry)


def test_contract_api_server_url():
    entry = "api_server_url"
    try:
        mod = importlib.import_module("ray.dashboard.utils")
    except ImportError as e:
        pytest.fail(_fail(f"ray.dashboard.utils is gone ({e})", entry))
    fn = getattr(mod, "ray_address_to_api_server_url", None)
    assert callable(fn), _fail("ray.dashboard.utils.ray_address_to_api_server_url is gone", entry)
    assert list(inspect.signature(fn).parameters) == ["address"], \
        _fail("ray_address_to_api_server_url no longer takes (address)", entry)


def test_contract_node_ip_address_is_public():
    """``tests/ray_cluster.py`` asks Ray for this machine's node IP through the public API (once
    ``ray._private.services.get_node_ip_address``)."""
    import ray.util

    assert callable(getattr(ray.util, "get_node_ip_address", None)), \
        "Ray upgrade removed ray.util.get_node_ip_address: fix node_ip() in tests/ray_cluster.py"


def test_contract_wandb_logging_actor():
    """WandbRunsActor sorts result keys with Ray's ``_WandbLoggingActor._handle_result`` on a stand-in
    holding only ``_exclude`` and ``_to_config``."""
    entry = "WandbRunsActor"
    wandb_mod = importlib.import_module("ray.air.integrations.wandb")
    base = getattr(wandb_mod, "_WandbLoggingActor", None)
    assert isinstance(base, type), _fail("ray.air.integrations.wandb._WandbLoggingActor is gone", entry)
    # ray.remote() adds a ``_ray_trace_ctx`` parameter to an actor class's methods in place
    assert _params(base._handle_result) == ["self", "result"], \
        _fail("_WandbLoggingActor._handle_result(result) changed", entry)
    reads = set(re.findall(r"self\.(\w+)", inspect.getsource(base._handle_result)))
    assert reads <= {"_exclude", "_to_config"}, _fail(f"_handle_result now reads {sorted(reads)}", entry)
    rules = types.SimpleNamespace(_exclude={"done"}, _to_config={"trial_id"})
    values, config = base._handle_result(rules, {"val_map": 0.5, "done": True, "trial_id": "t1", "note": object()})
    assert values == {"val_map": 0.5} and config == {"trial_id": "t1"}, _fail("_handle_result sorts keys differently", entry)
    # pickled by reference (Ray exports the actor class; Tune pickles the callback)
    assert pickle.loads(pickle.dumps(_ray_compat.WandbRunsActor)) is _ray_compat.WandbRunsActor


def test_contract_wandb_logger_callback_hooks():
    entry = "DriverWandbCallback"
    wandb_mod = importlib.import_module("ray.air.integrations.wandb")
    cb_cls = wandb_mod.WandbLoggerCallback
    for hook, expected in (("_start_logging_actor", ["self", "trial", "exclude_results", "wandb_init_kwargs"]),
                           ("_signal_logging_actor_stop", ["self", "trial"]),
                           ("_cleanup_logging_actor", ["self", "trial"]),
                           ("_cleanup_logging_actors", ["self", "timeout", "kill_on_timeout"])):
        fn = getattr(cb_cls, hook, None)
        assert callable(fn), _fail(f"WandbLoggerCallback.{hook} is gone", entry)
        got = _params(fn)
        assert got == expected, _fail(f"WandbLoggerCallback.{hook}{tuple(got)} is not {tuple(expected)}", entry)
    end = inspect.getsource(cb_cls.log_trial_end)
    assert "self._signal_logging_actor_stop" in end and "self._cleanup_logging_actors" in end, \
        _fail("log_trial_end no longer ends a run through _signal_logging_actor_stop + _cleanup_logging_actors", entry)
    cleanup = inspect.getsource(cb_cls._cleanup_logging_actors)
    assert "self._trial_logging_futures" in cleanup and "self._logging_future_to_trial" in cleanup \
        and "self._cleanup_logging_actor(" in cleanup, \
        _fail("_cleanup_logging_actors no longer waits on _trial_logging_futures and cleans per trial", entry)
    assert "self._cleanup_logging_actors" in inspect.getsource(cb_cls.on_experiment_end), \
        _fail("on_experiment_end no longer waits for the runs' finish", entry)
    assert isinstance(getattr(cb_cls, "_exclude_results", None), list), \
        _fail("WandbLoggerCallback._exclude_results is no longer a list", entry)
    cb = cb_cls(project="p")
    for attr in ("_trial_logging_actors", "_trial_logging_futures", "_logging_future_to_trial", "_trial_queues",
                 "AUTO_CONFIG_KEYS"):
        assert hasattr(cb, attr), _fail(f"WandbLoggerCallback lost {attr}", entry)
    for name in ("_clean_log",):
        assert callable(getattr(wandb_mod, name, None)), _fail(f"ray.air.integrations.wandb.{name} is gone", entry)
    node = importlib.import_module("ray.air.util.node")
    assert callable(getattr(node, "_force_on_current_node", None)), \
        _fail("ray.air.util.node._force_on_current_node is gone", entry)
    # the sweep's subclass builds, excludes Ray's keys and its own
    from raysearch.search._wandb_callback import SweepWandbCallback

    assert issubclass(SweepWandbCallback, _ray_compat.DriverWandbCallback)
    excluded = SweepWandbCallback._exclude_results
    assert set(cb_cls._exclude_results) <= set(excluded) and "final" in excluded


class _Trial:
    """What DriverWandbCallback reads of a Tune trial: its id, ``str()`` and ``last_result``."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.last_result, self.config = trial_id, {}, {}

    def __str__(self) -> str:
        return f"t_{self.trial_id}"


@pytest.mark.timeout(180)
def test_wandb_runs_actor_survives_a_crash_and_marks_interrupted_runs(ray_session, tmp_path, monkeypatch):
    """One logging actor for all runs: each run keeps its own epochs; a crashed actor costs the runs
    open in it, later trials log through a new one; runs whose trial never ended (an interrupted
    sweep) end as interrupted, exit code 1; upload_checkpoints is refused, not ignored."""
    import ray

    from tests.wandb_offline import read_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cb_cls = _ray_compat.DriverWandbCallback
    with pytest.raises(ValueError, match="upload_checkpoints"):
        cb_cls(project="p", upload_checkpoints=True)
    cb = cb_cls(project="p", mode="offline", dir=str(tmp_path))
    cb.setup()

    def run(trial_id: str, epochs: int, end: bool = True) -> _Trial:
        t = _Trial(trial_id)
        cb.start_run(t, **cb.kwargs, id=trial_id, name=str(t), group="g", project="p", config={"k": trial_id},
                     tags=[trial_id])
        for e in range(1, epochs + 1):
            cb.log_trial_result(e, t, {"epoch": e, "val_map": e / 10, "config": {}})
        if end:
            cb.log_trial_end(t)
        return t

    run("a", 3)
    cb._cleanup_logging_actors(timeout=60)  # a's run finished and forgotten
    assert not cb._trial_logging_actors
    b = run("b", 2, end=False)
    ray.kill(cb._runs_actor)  # the logging process dies while b's run is open
    cb.log_trial_end(b)
    cb._cleanup_logging_actors(timeout=30)  # b's finish fails: the dead actor is noticed
    run("c", 2)
    run("d", 1, end=False)  # never ended: the sweep is interrupted
    cb.on_experiment_end([])
    folders = {f.name.rsplit("-", 1)[-1]: f for f in (tmp_path / "wandb").glob("offline-run-*")}
    assert set(folders) - {"b"} == {"a", "c", "d"}  # b died with the actor (its folder exists if its init began)
    runs = {k: read_run(folders[k]) for k in "acd"}
    assert [h["epoch"] for h in runs["a"]["history"]] == [1, 2, 3] and runs["a"]["exit_code"] == 0
    assert [h["epoch"] for h in runs["c"]["history"]] == [1, 2] and runs["c"]["tags"] == ["c"]
    assert runs["a"]["pid"] != runs["c"]["pid"] == runs["d"]["pid"]  # c and d: the new actor
    assert runs["d"]["summary"]["stop_reason"] == "interrupted" and runs["d"]["exit_code"] == 1
    assert cb._runs_actor is None and not cb._trial_logging_actors  # stopped and forgotten at the end
