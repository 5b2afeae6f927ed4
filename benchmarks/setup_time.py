"""Benchmark: the set-up that `make test` / `make reproduce` do before any work.

    python benchmarks/setup_time.py            # clones this repository twice into /tmp

A fresh machine: a clone whose `uv sync` starts from an empty uv cache, so that every
wheel (torch's CUDA build among them, about 3 GB) comes from PyPI. A second clone:
the same, with the cache the first one filled. Both compile bytecode, as the Makefile
asks. Results go to benchmarks/results/setup_time.json. (No --tiny: the test suite
does not download the environment again.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, save


def timed_sync(clone: Path, cache: Path) -> float:
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_COMPILE_BYTECODE": "1"}
    env.pop("VIRTUAL_ENV", None)
    start = time.perf_counter()
    subprocess.run(["uv", "sync", "--frozen", "-q"], cwd=clone, env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="advland-setup-", dir="/tmp") as tmp:
        tmp = Path(tmp)
        cache = tmp / "uv-cache"
        seconds = {}
        for name in ("fresh_machine", "second_clone"):
            clone = tmp / name
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            seconds[name] = timed_sync(clone, cache)
            shutil.rmtree(clone / ".venv", ignore_errors=True)
    save(
        "setup_time",
        {"machine": machine(), "command": "uv sync --frozen (bytecode compiled)", **seconds},
        ROOT / "benchmarks" / "results",
    )
    print({k: round(v, 1) for k, v in seconds.items()})


if __name__ == "__main__":
    main()
