from __future__ import annotations

import pytest

from raysearch import paths
from raysearch.registry import Registry, UnknownNameError


def test_register_get_and_unknown_lists_choices():
    reg: Registry = Registry("widget")

    @reg.register("a")
    def make_a():
        return "A"

    reg.register("b", obj=lambda: "B")
    assert reg.get("a")() == "A" and reg.names() == ["a", "b"] and "b" in reg
    with pytest.raises(UnknownNameError) as e:
        reg.get("c")
    assert "unknown widget 'c'" in str(e.value) and "a, b" in str(e.value)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", obj=1)


def test_home_override_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSEARCH_HOME", str(tmp_path / "h"))
    assert paths.home() == (tmp_path / "h").resolve()
    assert paths.home(tmp_path / "o") == (tmp_path / "o").resolve()
    assert paths.cache_dir("images").is_dir()


def test_packages_register_their_plugins_eagerly_and_cheaply():
    """A fresh interpreter: importing a registry's module is enough to fill it (no lazy hook to call),
    and registering the CF models does not import Cornac (it is imported when a model is fitted)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from raysearch.data.registry import DATASETS\n"
            "from raysearch.cf.base import CF_MODELS\n"
            "print(','.join(CF_MODELS.names()), 'synthetic-tiny' in DATASETS, 'movielens' in DATASETS,"
            " 'cornac' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["bivaecf,bpr,gmf,vaecf,wmf", "True", "True", "False"]
