"""What every stage script shares: named arguments, logging, metrics, clean failure.

A stage gets every path it reads or writes from its `cmd` in dvc.yaml, by name
(`--data data/prepared/mnist2.npz --models models/<run> ...`), so each path is written
once, in dvc.yaml, and two swapped paths are an error instead of a silent mix-up.
`run_stage(main, doc, run=NAME, data=IN, models=OUT, ...)` declares them; it parses
them here, in one place, and before `main` does any work it

- checks that every OUT and SCRATCH folder can be written (a read-only or full disk is
  a one-line error before training, not a traceback after it);
- removes temporary files (`.<name>.*.tmp`) that a killed earlier attempt left beside
  an output.

It then runs `main`, writes the metrics it returns (with the stage's wall time in
"seconds") to `--metrics`, and turns the project's own errors (errors.AdvlandError)
into one line on stderr and exit code 2. Any other exception is a bug and keeps its
traceback. Outputs are `persist: true` in dvc.yaml: DVC leaves them in place, and each
is replaced atomically (core.io) only when the stage has made it, so a failed, refused
or interrupted stage keeps every output it had.
"""

from __future__ import annotations

import argparse
import enum
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

from pydantic import BaseModel

from advland.core import distributed
from advland.core.errors import AdvlandError
from advland.core.io import check_writable, remove_stale_temporaries, write_json


class Arg(enum.Enum):
    """What a named stage argument is."""

    NAME = "a name (run id, dataset, attack)"
    IN = "a path the stage reads"
    OUT = "a path the stage writes (a DVC output)"
    SCRATCH = "a folder for resumable work, not an output"


NAME, IN, OUT, SCRATCH = Arg.NAME, Arg.IN, Arg.OUT, Arg.SCRATCH


def parse_args(doc: str, args: dict[str, Arg], argv: list[str] | None = None):
    """`--<name> value` for each declared argument (all required) and `--params`."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--params", type=Path, required=True, help="the params file (IN)")
    for name, kind in args.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag, type=str if kind is NAME else Path, required=True, help=kind.value
        )
    return parser.parse_args(argv)


def run_stage(main: Callable[[argparse.Namespace], dict | BaseModel | None], doc: str, **args: Arg):
    """Run `main(namespace)` with the named arguments `args` (see the module doc).

    A dict (or pydantic model) that main returns goes to `--metrics`, with "seconds".
    """
    namespace = parse_args(doc, args)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    writes = [getattr(namespace, n) for n, kind in args.items() if kind in (OUT, SCRATCH)]
    start = perf_counter()
    try:
        check_writable(writes)
        remove_stale_temporaries(writes)
        metrics = main(namespace)
        if isinstance(metrics, BaseModel):
            metrics = metrics.model_dump()
        if metrics is not None and distributed.is_main():
            write_json(namespace.metrics, metrics | {"seconds": perf_counter() - start})
    except AdvlandError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
