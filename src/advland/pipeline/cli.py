"""`advland`: print the `runs` entries of a grid, to paste into params.yaml.

advland runs mnist2 lr l2 adv,rand 0,0.2,0.4          # 6 entries
advland runs mnist2 lr linf adv 0,8/255 --tag awp    # tagged variants

`advland profile NAME`: write params.yaml as the default with profiles/NAME.yaml over it.

advland profile tiny                                  # git checkout params.yaml: back
"""

from __future__ import annotations

import argparse
import itertools
import sys

from advland.core.config import parse_run
from advland.core.errors import ParamsError
from advland.pipeline.profiles import apply_profile


def grid_entries(axes: list[str], tag: str | None) -> list[str]:
    """One `runs` line per combination of the comma-separated axes, all validated first;
    a grid that makes an id twice (0.2,0.20) is an error, as params.yaml would be."""
    lines, seen = [], {}
    for combo in itertools.product(*(a.split(",") for a in axes)):
        dataset, model, norm, noise, eps = combo
        fields = {"dataset": dataset, "model": model, "norm": norm, "noise": noise}
        run = parse_run(fields | {"eps": eps, "tag": tag})
        if run.run_id in seen:
            raise ParamsError(
                f"the grid makes the run id {run.run_id!r} twice ({seen[run.run_id]!r} and "
                f"{' '.join(combo)!r}); list each value once"
            )
        seen[run.run_id] = " ".join(combo)
        extra = f", tag: {run.tag}" if run.tag else ""
        lines.append(
            f"  {run.run_id}: {{{', '.join(f'{k}: {v}' for k, v in fields.items())}, "
            f"eps: {eps}{extra}}}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="advland", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    runs = sub.add_parser("runs", help="print the runs entries of a grid, for params.yaml")
    for name in ("datasets", "models", "norms", "noises", "eps"):
        runs.add_argument(name, help="comma-separated")
    runs.add_argument("--tag", default=None, help="a tag for every run (e.g. awp)")
    profile = sub.add_parser("profile", help="write params.yaml for a profile in profiles/")
    profile.add_argument("name", help="a profile: profiles/<name>.yaml")
    args = parser.parse_args(argv)
    if args.cmd == "profile":
        try:
            print(f"{apply_profile(args.name)}: profile {args.name}")
        except ParamsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    axes = [args.datasets, args.models, args.norms, args.noises, args.eps]
    try:
        lines = grid_entries(axes, args.tag)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
