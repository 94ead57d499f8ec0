"""Name -> factory registries shared by Python code, YAML recipes and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A mapping from config names to factories.

    >>> COUPLINGS = Registry("coupling")
    >>> @COUPLINGS.register("independent")
    ... class Independent: ...
    >>> COUPLINGS.build("independent")  # doctest: +ELLIPSIS
    <...Independent object at ...>
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a factory under ``name``; ``meta`` is kept with it (:meth:`meta`)."""
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = factory
            self._meta[name] = dict(meta)
            return factory

        return decorator

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata ``name`` was registered with (a copy)."""
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str) -> Callable[..., T]:
        if not isinstance(name, str) or name not in self._items:
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            )
        return self._items[name]

    def get_class(self, name: str) -> type[T]:
        """The class registered as ``name``, for its class attributes (a factory function is refused)."""
        factory = self.get(name)
        if not isinstance(factory, type):
            raise TypeError(f"{self.kind} {name!r} is registered as a function, not a class")
        return factory

    def build(self, name: str, **kwargs: Any) -> T:
        """Instantiate ``name`` with ``kwargs``; a bad keyword names the valid ones."""
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as err:
            import inspect

            try:
                params = [p for p in inspect.signature(factory).parameters if p != "self"]
            except (TypeError, ValueError):  # builtins without a signature
                params = []
            raise ValueError(
                f"bad parameters for {self.kind} {name!r}: {err}; accepted: {', '.join(params) or 'none'}"
            ) from None
