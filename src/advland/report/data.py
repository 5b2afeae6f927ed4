"""The report's inputs: metrics of every stage and seed, landscapes, and other files.

`metrics/<stage>/<run_id>.json` holds {"n_seeds", "seeds": {seed: metrics},
"mean": metrics, "ci95": metrics (with >= 2 seeds), "seconds"}. A file that is
missing, corrupt or in another layout raises DataError naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from advland.core.config import Run
from advland.core.errors import DataError

STAGES = ("train", "evaluate", "hessian", "landscape")
LINEAR_MODELS = ("lr",)  # the paper's models; every other model is a deep net


def read_mapping(path: Path, loads, kind: str) -> dict:
    """A JSON or YAML file holding a mapping; any problem is a DataError naming the file."""
    try:
        obj = loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run its stage first)") from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        raise DataError(f"{path}: cannot read {kind} ({err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a mapping at the top level")
    return obj


def read_json(path: Path) -> dict:
    return read_mapping(path, json.loads, "JSON")


def read_yaml(path: Path) -> dict:
    return read_mapping(path, yaml.safe_load, "YAML")


def read_stage_metrics(metrics_dir: Path, stage: str, run_id: str) -> dict:
    path = Path(metrics_dir) / stage / f"{run_id}.json"
    metrics = read_json(path)
    if not {"n_seeds", "seeds", "mean"} <= set(metrics):
        raise DataError(f"{path}: not the per-seed layout (n_seeds, seeds, mean); re-run its stage")
    return metrics


def run_fields(run: Run) -> dict:
    return {
        "run_id": run.run_id,
        "family": run.family,
        "dataset": run.dataset,
        "model": run.model,
        "norm": run.norm,
        "noise": run.noise,
        "eps": run.eps,
        "tag": run.tag or "",
    }


def collect(runs: dict[str, Run], metrics_dir: Path) -> pd.DataFrame:
    """One row per run: its fields, then per stage the mean over seeds of every metric,
    `<metric>_ci95` (with >= 2 seeds), `n_seeds` and `<stage>_seconds`."""
    rows = []
    for run in runs.values():
        row = run_fields(run)
        for stage in STAGES:
            m = read_stage_metrics(metrics_dir, stage, run.run_id)
            new = {k: v for k, v in m["mean"].items() if k not in row}
            ci95 = m.get("ci95", {})
            row |= new | {f"{k}_ci95": ci95[k] for k in new if k in ci95}
            row["n_seeds"] = min(row.get("n_seeds", m["n_seeds"]), m["n_seeds"])
            row[f"{stage}_seconds"] = m.get("seconds", float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def collect_seeds(runs: dict[str, Run], metrics_dir: Path) -> pd.DataFrame:
    """One row per run and seed: the run's fields, `seed`, and that seed's metrics."""
    rows: dict[tuple[str, int], dict] = {}
    for run in runs.values():
        for stage in STAGES:
            seeds = read_stage_metrics(metrics_dir, stage, run.run_id)["seeds"]
            for seed, metrics in seeds.items():
                key = (run.run_id, int(seed))
                row = rows.setdefault(key, run_fields(run) | {"seed": int(seed)})
                row |= {k: v for k, v in metrics.items() if k not in row}
    return pd.DataFrame(list(rows.values()))


def subjects(runs: pd.DataFrame):
    """(name, rows) per dataset, model, norm and tag."""
    for (dataset, model, norm, tag), g in runs.groupby(["dataset", "model", "norm", "tag"]):
        yield f"{dataset}-{model}-{norm}" + (f"-{tag}" if tag else ""), g


def read_landscape(path: Path, seed: int) -> pd.DataFrame:
    """The rows of one seed in a landscape CSV (1D: alpha; 2D: alpha, beta)."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the landscape stage first)") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None
    if "seed" not in frame:
        raise DataError(f"{path}: no `seed` column; re-run the landscape stage")
    rows = frame[frame.seed == seed]
    if rows.empty:
        raise DataError(f"{path}: has no rows for seed {seed}")
    return rows
