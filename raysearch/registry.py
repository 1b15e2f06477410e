"""One tiny registry type for every pluggable kind (datasets, backbones, CF models,
weighting schemes, methods), in the spirit of timm's ``register_model``.

A registry maps a name to a factory.  Unknown names are errors that list the
choices, so a typo on the command line never falls through to a default.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from raysearch.errors import RaysearchError, short

T = TypeVar("T")


class UnknownNameError(RaysearchError, KeyError):
    """Raised for a name no one registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None, *, obj: T | None = None) -> Callable[[T], T] | T:
        """Use as ``@REG.register("name")`` or ``REG.register("name", obj=thing)``."""

        def deco(o: T) -> T:
            key = name or getattr(o, "__name__", None)
            if not key:
                raise ValueError(f"{self.kind}: a name is required")
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = o
            return o

        return deco(obj) if obj is not None else deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {short(name)}; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
