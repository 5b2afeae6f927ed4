"""The project's own error types, and the registries that raise them.

A stage turns an `AdvlandError` into a one-line message and exit code 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class AdvlandError(Exception):
    """A problem with the user's input (params, data, caches, checkpoints) or output
    location, not a bug."""


class ParamsError(AdvlandError, ValueError):
    """A malformed parameter; the message names the key and what is allowed."""


class DataSourceError(AdvlandError):
    """No source could provide a dataset, or a file failed its checksum."""


class DataError(AdvlandError, ValueError):
    """A prepared dataset file that is missing, corrupt or of the wrong format."""


class CheckpointError(AdvlandError, ValueError):
    """A `.pt` file (checkpoint, eigenvectors) that is missing, corrupt or not safe to load."""


class OutputError(AdvlandError):
    """An output that cannot be written: its folder is read-only, full or forbidden."""


class TrainingDiverged(AdvlandError, FloatingPointError):
    """The training loss became non-finite."""


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
