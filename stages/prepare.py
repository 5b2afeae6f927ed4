"""prepare: one dataset from real, checksum-verified files into its .npz and .json."""

import os
from pathlib import Path

from advland.core.config import load_params
from advland.core.errors import ParamsError
from advland.data import prepare
from advland.pipeline.stage import IN, NAME, OUT, run_stage


def main(args) -> None:
    params = load_params(args.params)
    if args.dataset not in params.prepare.datasets:
        raise ParamsError(f"prepare.datasets does not list {args.dataset!r}")
    cache = Path(os.environ.get("ADVLAND_CACHE", Path.home() / ".cache" / "advland"))
    prepare(
        args.dataset,
        out_npz=args.npz,
        out_json=args.json,
        raw_dir=args.raw,
        cache_dir=cache / "sources",
        sources=params.prepare.sources,
        timeout_s=params.prepare.download_timeout_s,
    )


if __name__ == "__main__":
    run_stage(main, __doc__, dataset=NAME, raw=IN, npz=OUT, json=OUT)
