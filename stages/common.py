"""What every stage script shares: reading params.yaml, logging, clean failure."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

import yaml

from advland.config import Params, ParamsError, parse_params
from advland.io import CheckpointError, write_json
from advland.sources import DataSourceError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-06 (as `dvc exp run -S` writes it) as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def write_metrics(path: str | Path, metrics: dict, started: float) -> None:
    """The stage's metrics JSON, with its wall time since `started` (perf_counter)."""
    write_json(Path(path), metrics | {"seconds": perf_counter() - started})


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except (OSError, yaml.YAMLError) as err:
        raise ParamsError(f"{path}: cannot read parameters ({err})") from None
    return parse_params(raw, source=str(path))


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main with logging; known failures print one message and exit 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        main()
    except (ParamsError, DataSourceError, CheckpointError, ValueError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
