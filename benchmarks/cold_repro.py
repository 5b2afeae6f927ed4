"""Benchmark: a cold `dvc repro` of the default pipeline in a fresh clone.

    python benchmarks/cold_repro.py          # clones this repository into /tmp

The clone has the committed outputs but no DVC cache, so every stage runs: prepare
(3 datasets), the LR grid's train / evaluate / hessian / landscape, and the report.
Records the wall time of `uv run dvc repro`, the stages' own work (the `seconds` in
their metrics) and the rest, which is start-up and DVC's per-stage bookkeeping.
Results go to benchmarks/results/cold_repro.json. (No --tiny: the pipeline tests run
the tiny profile through DVC.)
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, save

STAGES = ("train", "evaluate", "hessian", "landscape")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="advland-cold-", dir="/tmp") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {**os.environ, "UV_COMPILE_BYTECODE": "1"}
        env.pop("VIRTUAL_ENV", None)
        subprocess.run(["uv", "sync", "--frozen", "-q"], cwd=clone, env=env, check=True)
        start = time.perf_counter()
        done = subprocess.run(
            ["uv", "run", "--frozen", "dvc", "repro"], cwd=clone, env=env,
            capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
        runs = yaml.safe_load((clone / "params.yaml").read_text())["runs"]
        work = {
            stage: sum(
                json.loads((clone / "metrics" / stage / f"{run}.json").read_text())["seconds"]
                for run in runs
            )
            for stage in STAGES
        }
        n_stages = done.stdout.count("Running stage")
    result = {
        "command": "uv run dvc repro (fresh clone, empty DVC cache)",
        "stages_run": n_stages,
        "wall_s": wall,
        "work_s": work,
        "rest_s": wall - sum(work.values()),
        "rest_per_stage_s": (wall - sum(work.values())) / n_stages,
    }
    save("cold_repro", result, ROOT / "benchmarks" / "results")


if __name__ == "__main__":
    main()
