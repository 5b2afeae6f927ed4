"""What every stage script shares: its command line, logging, metrics, clean failure.

A stage gets the run id and every path it reads or writes from dvc.yaml's `cmd`, so
each path is written once, in dvc.yaml. `run_stage` parses them, runs the stage,
writes the metrics it returns (with the stage's wall time), and turns the project's
own errors (errors.AdvlandError) into one line on stderr and exit code 2. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

from advland.core import distributed
from advland.core.errors import AdvlandError
from advland.core.io import write_json


def run_stage(main: Callable[[argparse.Namespace], dict | None], doc: str, *args: str) -> None:
    """Run `main(namespace)` with positional `args` ("run" and "dataset" are strings, the
    rest paths).

    A dict that main returns goes to the `metrics` path, with "seconds" added.
    """
    parser = argparse.ArgumentParser(description=doc)
    for name in args:
        parser.add_argument(name, type=str if name in ("run", "dataset") else Path)
    namespace = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    start = perf_counter()
    try:
        metrics = main(namespace)
        if metrics is not None and distributed.is_main():
            write_json(namespace.metrics, metrics | {"seconds": perf_counter() - start})
    except AdvlandError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
