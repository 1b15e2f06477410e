"""The import graph of ``raysearch`` follows its stages: no module imports a stage above its own.

Layers, bottom to top (a module may import its own layer and the ones below):

0. stage-neutral: ``_io errors config choices registry paths progress _lazy _gc metrics runs _ray_compat cluster_cuda``
   (``runs``: the results schema, the best trial and run/checkpoint resolution on any filesystem)
1. ``data`` -> 2. ``cf`` -> 3. ``model`` -> 4. ``train`` -> 5. ``search``
6. what a sweep's outputs are used for: ``report`` (results table, sweep dashboard), ``predict``, ``export``
7. ``experiment`` (K-fold x seeds protocol run as Tune grids on ``search``; its own report and dashboard)
8. the entry points: ``_cli``, ``cli``, the package ``raysearch/__init__.py`` (its lazy flat API)

Every import counts: module level, inside functions (lazy), ``importlib.import_module("raysearch...")`` and
module names given as strings (the lazy APIs of ``_lazy.lazy_api``).  The layering is what
``docs/architecture.md`` draws (data -> cf -> model -> train -> search -> report, with ``experiment``
on top of search and report); the two cycles this test was written against were ``model.io`` ->
``search.results`` (the best trial of a sweep: now ``raysearch.runs``) and ``report`` -> ``experiment``
(the experiment dashboard: now ``raysearch.experiment.report.dashboard``).
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

import raysearch

PKG = Path(raysearch.__file__).resolve().parent

LAYERS: list[tuple[str, ...]] = [
    ("_io", "errors", "config", "choices", "registry", "paths", "progress", "_lazy", "_gc", "metrics", "runs",
     "_ray_compat", "cluster_cuda"),
    ("data",),
    ("cf",),
    ("model",),
    ("train",),
    ("search",),
    ("report", "predict", "export"),
    ("experiment",),
    ("_cli", "cli", "__init__", "__main__"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}

#: (importing module, imported module or "*" for any) pairs accepted although upward, each with its reason.
#: Add an entry only with the reason; an entry that matches nothing any more fails the stale test below.
ALLOWED: dict[tuple[str, str], str] = {
    # the config choices (raysearch.choices, imported by raysearch.config) bind their factories late, by
    # module name (choices.lazy("raysearch.search.tune", "asha_scheduler") ...), imported on first call only:
    # a run-time upward reference, not an import-time one.  The clean form is the stage registering its
    # factory into the choice registry (dependency inversion); kept while the choices registry is new.
    ("raysearch.choices", "*"): "late-bound factories of the config choices (by module name)",
}


def allowed(importer: str, target: str) -> bool:
    return (importer, target) in ALLOWED or (importer, "*") in ALLOWED

_MODULE_STRING = re.compile(r"raysearch(\.[A-Za-z_][A-Za-z0-9_]*)+")


def component(module: str) -> str:
    """The stage a dotted module name belongs to (``raysearch.search.results`` -> ``search``);
    ``raysearch`` itself is its ``__init__``."""
    parts = module.split(".")
    assert parts[0] == "raysearch", module
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path = PKG) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = ["raysearch", *rel.parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(module: str, source: str, is_package: bool = False, known: set[str] | None = None) -> list[tuple[str, int]]:
    """(imported raysearch module, line) for every import in ``source``, wherever it sits."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "raysearch"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "raysearch":
                continue
            for a in node.names:  # `from raysearch import search` imports the submodule raysearch.search
                sub = f"{target}.{a.name}"
                out.append((sub if known is not None and sub in known else target, node.lineno))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
            # importlib.import_module("raysearch.x") / lazy_api's {"name": "raysearch.x"}: a dynamic import
            if known is None or node.value in known:
                out.append((node.value, node.lineno))
    return out


@functools.lru_cache(maxsize=None)
def _sources(root: Path) -> tuple[tuple[str, tuple[str, bool]], ...]:
    return tuple((module_name(p, root), (p.read_text(), p.name == "__init__.py")) for p in sorted(root.rglob("*.py")))


def sources(root: Path = PKG) -> dict[str, tuple[str, bool]]:
    """module name -> (source, is a package's __init__), for every module of the package."""
    return dict(_sources(root))


def violations(mods: dict[str, tuple[str, bool]]) -> list[str]:
    """Every import of a module from a higher layer than the importer's, as readable lines."""
    known = set(mods) | {m.rpartition(".")[0] for m in mods if "." in m}
    bad = []
    for mod, (src, is_pkg) in mods.items():
        here = component(mod)
        for target, line in imports(mod, src, is_pkg, known):
            there = component(target)
            if RANK[there] > RANK[here] and not allowed(mod, target):
                bad.append(f"{mod}:{line} imports {target} "
                           f"({here} is layer {RANK[here]}, {there} is layer {RANK[there]})")
    return bad


def test_every_module_has_a_layer():
    unknown = sorted({component(m) for m in sources()} - set(RANK))
    assert not unknown, f"modules of no layer {unknown}: add them to LAYERS (and docs/architecture.md)"


def test_no_upward_import_between_stages():
    bad = violations(sources())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_allow_list_has_no_stale_entries():
    """An allowed upward import that no longer exists must leave the list."""
    mods = sources()
    known = set(mods) | {m.rpartition(".")[0] for m in mods if "." in m}
    found = {(m, t) for m, (src, pkg) in mods.items() for t, _ in imports(m, src, pkg, known)
             if RANK[component(t)] > RANK[component(m)]}
    found |= {(m, "*") for m, _ in found}
    assert not set(ALLOWED) - found, sorted(set(ALLOWED) - found)


def test_model_does_not_import_search_nor_report_experiment():
    """The two cycles of the issue, by name."""
    mods = sources()
    known = set(mods)
    io_imports = {t for t, _ in imports("raysearch.model.io", *mods["raysearch.model.io"], known)}
    assert not any(component(t) in ("search", "train", "experiment") for t in io_imports), io_imports
    report_imports = {t for t, _ in imports("raysearch.report", *mods["raysearch.report"], known)}
    assert not any(component(t) == "experiment" for t in report_imports), report_imports
    runs_imports = {component(t) for t, _ in imports("raysearch.runs", *mods["raysearch.runs"], known)}
    assert runs_imports <= set(LAYERS[0]), runs_imports


@pytest.mark.parametrize("module,source", [
    ("raysearch.model.io", "from raysearch.search.results import best_row\n"),            # module level
    ("raysearch.model.io", "def f():\n    from raysearch.search import results\n"),        # lazy, in a function
    ("raysearch.report", "import raysearch.experiment.report as er\n"),                    # plain import
    ("raysearch.data.format", "from raysearch import cf\n"),                               # a submodule by name
    ("raysearch.cf.weights", "from ..train import methods\n"),                             # relative
    ("raysearch.runs", "import importlib\nimportlib.import_module('raysearch.model.io')\n"),  # dynamic
    ("raysearch.paths", "from raysearch import __version__\n"),                            # the package itself
])
def test_checker_flags_a_synthetic_upward_import(module, source):
    """Negative control: the checker does see an upward import in each form."""
    mods = {**sources(), module: (source, False)}
    bad = [b for b in violations(mods) if b.startswith(f"{module}:")]
    assert bad, f"not flagged: {source!r} in {module}"


def test_checker_accepts_downward_and_same_layer_imports():
    mods = {**sources(), "raysearch.predict": ("from raysearch.export import exported_kind\n"
                                               "from raysearch.model.io import load_model\n"
                                               "def f():\n    from raysearch.runs import locate\n", False)}
    assert not [b for b in violations(mods) if b.startswith("raysearch.predict:")]
