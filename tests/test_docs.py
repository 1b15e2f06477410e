"""``docs/architecture.md`` is the contract: its registry table and its module map are checked
against the code, so a registry, a registered name or a module cannot be added, renamed or
removed without the document following."""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import raysearch
from raysearch.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PKG = ROOT / "raysearch"


def code_registries() -> dict[str, Registry]:
    """Every module-level ``Registry`` in the package, as ``module.NAME`` (each object once, under
    the module that defines it: the one whose name its ``kind`` was declared in)."""
    found: dict[int, tuple[str, Registry]] = {}
    for m in pkgutil.walk_packages(raysearch.__path__, "raysearch."):
        mod = importlib.import_module(m.name)
        for attr, obj in vars(mod).items():
            if isinstance(obj, Registry) and attr.isupper():
                prev = found.get(id(obj))
                # keep the defining module: the shortest re-export chain is not enough, so prefer
                # the module whose source assigns it
                src = Path(mod.__file__).read_text()
                if re.search(rf"^{attr}\b[^=\n]*=\s*Registry\(", src, re.M) or prev is None:
                    found[id(obj)] = (f"{m.name}.{attr}", obj)
    return dict(found.values())


def doc_registries(text: str) -> dict[str, list[str]]:
    """The ``## Registries`` table: | `module.NAME` | kind | `name`, `name`... |"""
    section = text.split("## Registries", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`raysearch."):
            rows[cells[0].strip("`")] = re.findall(r"`([^`]+)`", cells[2])
    return rows


def registry_problems(text: str, code: dict[str, Registry]) -> list[str]:
    if "## Registries" not in text:
        return ["docs/architecture.md has no '## Registries' table"]
    doc = doc_registries(text)
    out = [f"registry {n} is not in the doc" for n in sorted(set(code) - set(doc))]
    out += [f"the doc lists {n}, which the code does not define" for n in sorted(set(doc) - set(code))]
    out += [f"{n}: the doc lists {sorted(doc[n])}, the code registers {reg.names()}"
            for n, reg in code.items() if n in doc and sorted(doc[n]) != reg.names()]
    return out


def module_problems(text: str, modules: list[Path]) -> list[str]:
    tree = text.split("```", 2)[1] if text.count("```") >= 2 else ""
    out = [f"the module map lacks {p.relative_to(ROOT)}" for p in modules
           if not re.search(rf"\b{re.escape(p.stem)}(\.py|/)", tree)]
    stems = {p.stem for p in modules}
    out += [f"the module map names {n}.py, which does not exist" for n in re.findall(r"\b([a-z_]+)\.py\b", tree)
            if n not in stems and n != "__init__"]
    return out


def _modules() -> list[Path]:
    return [p for p in sorted(PKG.rglob("*.py")) if p.name != "__init__.py"]


def test_doc_lists_every_registry_with_its_registered_names():
    assert registry_problems(DOC.read_text(), code_registries()) == []


def test_doc_module_map_matches_the_package():
    assert module_problems(DOC.read_text(), _modules()) == []


def test_the_checks_fail_on_a_drifted_doc():
    """Negative controls: a registered name the doc lacks, a registry it lacks, a missing module."""
    reg = Registry("thing")
    reg.register("a", obj=1)
    reg.register("b", obj=2)
    good = "## Registries\n| `raysearch.x.REG` | thing | `a`, `b` |\n"
    assert registry_problems(good, {"raysearch.x.REG": reg}) == []
    assert registry_problems(good.replace(", `b`", ""), {"raysearch.x.REG": reg})
    assert registry_problems(good, {"raysearch.x.REG": reg, "raysearch.y.OTHER": reg})
    mods = _modules()
    text = DOC.read_text()
    assert module_problems("```\nconfig.py\n```", mods)          # every other module missing
    assert module_problems(text.replace("```", "```\ngone_module.py\n", 1), mods)
