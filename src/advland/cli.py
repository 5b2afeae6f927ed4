"""`advland`: print the run ids of a grid, to paste into params.yaml `runs:`.

advland runs mnist2 lr l2 adv,rand 0,0.2,0.4   # print run ids for a grid
"""

from __future__ import annotations

import argparse
import itertools
import sys

from advland.config import ParamsError, RunSpec, parse_eps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="advland", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    runs = sub.add_parser("runs", help="print the run ids of a grid, for params.yaml")
    for name in ("datasets", "models", "norms", "noises", "eps"):
        runs.add_argument(name, help="comma-separated")
    args = parser.parse_args(argv)
    try:
        axes = [args.datasets, args.models, args.norms, args.noises]
        for d, m, n, z in itertools.product(*(a.split(",") for a in axes)):
            for e in args.eps.split(","):
                run = RunSpec.parse(f"{d}-{m}-{n}-{z}-0")
                print(
                    f"  - {RunSpec(run.dataset, run.model, run.norm, run.noise, parse_eps(e)).run_id}"
                )
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
