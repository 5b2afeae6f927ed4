"""The schemas of what the stages write to metrics/, one module per stage.

A stage's library function returns its schema's instance; the stage harness writes
`model_dump()` (with "seconds") as JSON, and the report reads the file back through the
same schema (`read_metrics`), so a missing, renamed or mistyped metric is an error that
names the file and the key. A schema keeps the keys in the order they were given, so a
file read and written again is byte-identical.

Each per-stage module holds one schema, so that editing one re-runs only the stage
that writes it (and the report).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    ValidationError,
    model_serializer,
    model_validator,
)

from advland.core.errors import AdvlandError

# A real number as the stage computed it: an int stays an int, so a file round-trips.
Real = float | int


class MetricsError(AdvlandError, ValueError):
    """A metrics file that is missing, unreadable, or does not match its stage's schema."""


class Metrics(BaseModel):
    """A mapping of named metrics: the declared fields, plus keys matching one of the
    `FAMILIES` patterns (numbered or per-attack metrics such as lambda2, acc_clean_pgd),
    each a real number. Any other key is an error. Keys keep their given order."""

    model_config = ConfigDict(extra="allow", frozen=True)
    FAMILIES: ClassVar[tuple[str, ...]] = ()  # regular expressions of the extra keys
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler) -> Metrics:
        model = handler(data)
        if isinstance(data, dict):
            model._order = tuple(data)
        return model

    @model_validator(mode="after")
    def _families(self) -> Metrics:
        for key, value in (self.__pydantic_extra__ or {}).items():
            if not self.is_family(key):
                raise ValueError(f"{key!r} is not a metric of {type(self).__name__}")
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"{key!r} must be a number, got {value!r}")
        return self

    @classmethod
    def is_family(cls, key: str) -> bool:
        return any(re.fullmatch(p, key) for p in cls.FAMILIES)

    def require(self, keys: list[str], why: str) -> None:
        """ValueError naming the first of `keys` that this mapping lacks (or holds as None)."""
        values = self.model_dump()
        for key in keys:
            if values.get(key) is None:
                raise ValueError(f"{key!r} is missing ({why})")

    @model_serializer(mode="wrap")
    def _in_order(self, handler) -> dict:
        out = handler(self)
        return {key: out[key] for key in self._order or out if key in out}


SeedT = TypeVar("SeedT", bound=Metrics)


class Seeds(Metrics, Generic[SeedT]):
    """A run's metrics over its seeds (advland.measure.aggregate.summarize): every seed's own
    metrics, their mean over the seeds, the 95% CI half-width (with >= 2 seeds) and
    the stage's wall time in seconds (added by the stage harness)."""

    n_seeds: int
    seeds: dict[str, SeedT]  # by seed, as a string
    mean: dict[str, float]
    ci95: dict[str, float] | None = None
    seconds: float | None = None

    @model_validator(mode="after")
    def _summary(self) -> Seeds:
        """mean (and ci95) hold exactly the numeric metrics that every seed has."""
        per_seed = [s.model_dump() for s in self.seeds.values()]
        if len(per_seed) != self.n_seeds:
            raise ValueError(f"n_seeds is {self.n_seeds} but {len(per_seed)} seeds are listed")
        keys = [
            k
            for k, v in per_seed[0].items()
            if isinstance(v, int | float)
            and not isinstance(v, bool)
            and all(k in s for s in per_seed)
        ]
        parts = {"mean": self.mean} | ({"ci95": self.ci95} if self.n_seeds >= 2 else {})
        for part, values in parts.items():
            for key in [*keys, *values]:
                if (key in keys) != (key in (values or {})):
                    problem = "missing" if key in keys else "not a metric of every seed"
                    raise ValueError(f"{part}.{key}: {problem}")
        return self


M = TypeVar("M", bound=BaseModel)


def read_metrics(path: Path, schema: type[M], context: dict | None = None) -> M:
    """The metrics file at `path`, validated by `schema` (with `context`, what the
    schema's checks need to know about the run); any problem is a MetricsError naming
    the file and the first key at fault."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MetricsError(f"{path}: not found (run its stage first)") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise MetricsError(f"{path}: cannot read JSON ({err})") from None
    try:
        return schema.model_validate(raw, context=context)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        what = "missing" if first["type"] == "missing" else first["msg"]
        what = what.removeprefix("Value error, ")
        where = f"{key}: " if key else ""
        raise MetricsError(f"{path}: {where}{what} ({schema.__name__}; re-run its stage)") from None
