"""`Registry`: named implementations of one kind, whose unknown names list the allowed ones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from advland.core.errors import ParamsError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named implementations of one kind (attacks, norms, models, optimizers).

    Looking up an unknown name raises ParamsError listing the allowed names.
    """

    def __init__(self, kind: str, entries: dict[str, T] | None = None):
        self.kind, self._entries = kind, dict(entries or {})

    def register(self, name: str):
        """Decorator: `@NORMS.register("l2")`."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ParamsError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(self._entries)}"
            ) from None

    def check(self, name: str) -> str:
        """The name itself if registered; else the ParamsError of an unknown name."""
        self[name]
        return name

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
