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
