"""prepare: one dataset from real files into data/prepared/{dataset}.npz + .json."""

import os
import sys
from pathlib import Path

from common import load_params, run_stage

from advland.data import prepare


def main() -> None:
    dataset = sys.argv[1]
    params = load_params()
    if dataset not in params.prepare.datasets:
        raise ValueError(f"prepare.datasets does not list {dataset!r}")
    cache = Path(os.environ.get("ADVLAND_CACHE", Path.home() / ".cache" / "advland"))
    prepare(
        dataset,
        out_npz=Path(f"data/prepared/{dataset}.npz"),
        out_json=Path(f"data/prepared/{dataset}.json"),
        raw_dir=Path("data/raw"),
        cache_dir=cache / "sources",
        sources=params.prepare.sources,
        timeout_s=params.prepare.download_timeout_s,
    )


if __name__ == "__main__":
    run_stage(main)
