"""Name → object registries that fail loudly on unknown or duplicate names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from umaf.errors import UmafError

T = TypeVar("T")


class Registry(Generic[T]):
    """A lowercase-keyed registry of one kind of thing (metrics, poolings, capabilities, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` return a decorator."""
        key = name.lower()

        def add(item: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Return the entry called ``name``; unknown names raise a :class:`UmafError` listing the choices."""
        try:
            return self._items[name.lower()]
        except KeyError:
            raise UmafError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
