"""Benchmark: a cold `dvc repro` in a fresh clone.

    python benchmarks/cold_repro.py            # the whole default pipeline
    python benchmarks/cold_repro.py --lr-grid  # the main paper's LR grid only

The clone has the committed outputs but no DVC cache, so every stage runs. With
--lr-grid the clone's params.yaml keeps only the untagged logistic-regression runs (the
paper's grid, Tables 1-4) and no companion `linear` studies: prepare (3 datasets), the
grid's train / evaluate / hessian / landscape, the toy surfaces, the tiny profile's
fine-tuning of an LR model (its stages need one; a few seconds) and the report.
Records the wall time of `uv run dvc repro`, the stages that ran (a stage whose deps and
committed outputs match its lock is skipped: with byte-identical models, most stages
downstream of train are, unless a code or params change touched them), their own work
(the `seconds` in the metrics of the per-run stages that ran) and the rest, which is
start-up, DVC's per-stage bookkeeping and the other stages, and whether every run's
metrics (wall times aside) equal the committed ones. --keep DIR keeps the clone there.
Results go to benchmarks/results/cold_repro[_lr_grid].json. (No --tiny: the pipeline
tests run the tiny profile through DVC.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, save

from advland.pipeline.profiles import resolve_profile

STAGES = ("train", "evaluate", "hessian", "landscape", "flatness")
RAN = re.compile(r"Running stage '(?:stages/\w+/dvc\.yaml:)?([^']+)'")


def without_seconds(obj):
    """A metrics file's content without its wall times (which differ run to run)."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    return obj


def differing(clone: Path, runs) -> list[str]:
    """The metrics files of `runs` whose numbers differ from this repository's (a file
    this repository does not have yet, of a new stage, is not compared)."""
    return [
        f"{stage}/{run}"
        for stage in STAGES
        for run in runs
        if (ROOT / "metrics" / stage / f"{run}.json").is_file()
        and without_seconds(json.loads((clone / "metrics" / stage / f"{run}.json").read_text()))
        != without_seconds(json.loads((ROOT / "metrics" / stage / f"{run}.json").read_text()))
    ]


def lr_grid_only(params_file: Path) -> None:
    """Keep the untagged logistic-regression runs and no companion `linear` studies;
    fine-tuning (its stages need a clean model) as in the tiny profile, on LR."""
    params = yaml.safe_load(params_file.read_text())
    tiny = resolve_profile("tiny", params_file.parent)
    params["finetune"] = tiny["finetune"]
    params["runs"] = {
        k: r for k, r in params["runs"].items() if r["model"] == "lr" and not r.get("tag")
    }
    params["companion"]["linear"] = {}
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lr-grid", action="store_true", help="the LR grid only")
    parser.add_argument("--keep", type=Path, help="copy the clone here when done")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="advland-cold-", dir="/tmp") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if args.lr_grid:
            lr_grid_only(clone / "params.yaml")
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
        ran = RAN.findall(done.stdout)
        work = {
            stage: sum(
                json.loads((clone / "metrics" / stage / f"{run}.json").read_text())["seconds"]
                for run in runs
                if f"{stage}@{run}" in ran
            )
            for stage in STAGES
        }
        changed = differing(clone, runs)
        if args.keep:
            shutil.copytree(clone, args.keep, symlinks=True)
    result = {
        "command": "uv run dvc repro (fresh clone, empty DVC cache)"
        + (
            ", params: the untagged LR runs, no companion.linear, tiny finetune"
            if args.lr_grid
            else ""
        ),
        "stages_run": len(ran),
        "stages_run_per_kind": {
            kind: sum(name.split("@")[0] == kind for name in ran)
            for kind in dict.fromkeys(name.split("@")[0] for name in ran)
        },
        "wall_s": wall,
        "work_s": work,
        "rest_s": wall - sum(work.values()),
        "metrics_equal_to_committed": not changed,
        "metrics_differing": changed,
    }
    save(
        "cold_repro_lr_grid" if args.lr_grid else "cold_repro",
        result,
        ROOT / "benchmarks" / "results",
    )


if __name__ == "__main__":
    main()
