"""The report's inputs: metrics of every stage and seed, landscapes, and other files.

`metrics/<stage>/<run_id>.json` holds {"n_seeds", "seeds": {seed: metrics},
"mean": metrics, "ci95": metrics (with >= 2 seeds), "seconds"}, read through its
stage's schema (advland.metrics): a file that is missing, corrupt, or lacks or renames
a metric raises MetricsError naming the file and the key. Seeds whose training
failed (status "failed" in metrics/train) are left out of every mean and verdict and
listed by `failures`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from advland.core.config import Run
from advland.core.errors import DataError
from advland.core.perturb import PERTURBATIONS
from advland.measure.aggregate import summarize
from advland.metrics import Seeds, read_metrics
from advland.metrics.evaluate import EvaluateMetrics
from advland.metrics.flatness import FlatnessMetrics
from advland.metrics.hessian import HessianMetrics
from advland.metrics.landscape import LandscapeMetrics
from advland.metrics.train import TrainMetrics

SCHEMAS: dict[str, type[Seeds]] = {
    "train": TrainMetrics,
    "evaluate": EvaluateMetrics,
    "hessian": HessianMetrics,
    "landscape": LandscapeMetrics,
}
STAGES = tuple(SCHEMAS)


@dataclass(frozen=True)
class Inputs:
    """What a study reads besides the runs' metrics, and where its figures go."""

    landscapes: Path  # landscapes/{1d,2d}/<run_id>.csv
    logs: Path  # logs/train/<run_id>.csv: per-epoch training rows
    paper: dict  # reports/paper_values.yaml
    params: dict  # params.yaml, validated
    figures: Path
    spectra: Path  # spectra/values/<run_id>.csv: eigenvalues per seed (hessian stage)
    companion: Path | None = None  # companion/: the companion stages' tables
    metrics: Path | None = None  # metrics/: files other than the runs' (finetune, companion)


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


def read_stage_metrics(metrics_dir: Path, stage: str, run: Run) -> dict:
    """metrics/<stage>/<run_id>.json, validated by the stage's schema, as a mapping."""
    context = {
        "linear": run.model in LINEAR_MODELS,
        "adversarial": PERTURBATIONS[run.noise].moves_with_weights,
    }
    path = Path(metrics_dir) / stage / f"{run.run_id}.json"
    return read_metrics(path, SCHEMAS[stage], context).model_dump()


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


def run_metrics(metrics_dir: Path, run: Run) -> dict[str, dict]:
    """{stage: metrics} of one run, each file read once."""
    return {stage: read_stage_metrics(metrics_dir, stage, run) for stage in STAGES}


def failed_seeds(train: dict) -> dict[int, str]:
    """{seed: reason} for the seeds whose training failed, from a run's train metrics."""
    return {
        int(s): m.get("failure", "")
        for s, m in train["seeds"].items()
        if m.get("status") == "failed"
    }


def failures(runs: dict[str, Run], metrics_dir: Path) -> pd.DataFrame:
    """One row per failed seed: run_id, seed, reason."""
    rows = [
        {"run_id": run_id, "seed": seed, "reason": reason}
        for run_id, run in runs.items()
        for seed, reason in failed_seeds(read_stage_metrics(metrics_dir, "train", run)).items()
    ]
    return pd.DataFrame(rows, columns=["run_id", "seed", "reason"])


def collect(runs: dict[str, Run], metrics_dir: Path) -> pd.DataFrame:
    """One row per run with a seed that trained: its fields, then per stage the mean over
    those seeds of every metric, `<metric>_ci95` (with >= 2 seeds), `n_seeds` and
    `<stage>_seconds`."""
    rows = []
    for run in runs.values():
        metrics = run_metrics(metrics_dir, run)
        failed = failed_seeds(metrics["train"])
        if len(failed) == metrics["train"]["n_seeds"]:
            continue
        row = run_fields(run)
        for stage, m in metrics.items():
            ok = {int(s): v for s, v in m["seeds"].items() if int(s) not in failed}
            if failed:
                m = summarize(ok) | {"seconds": m.get("seconds", float("nan"))}
            new = {k: v for k, v in m["mean"].items() if k not in row}
            ci95 = m.get("ci95", {})
            row |= new | {f"{k}_ci95": ci95[k] for k in new if k in ci95}
            row["n_seeds"] = min(row.get("n_seeds", m["n_seeds"]), m["n_seeds"])
            row[f"{stage}_seconds"] = m.get("seconds", float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def collect_seeds(runs: dict[str, Run], metrics_dir: Path) -> pd.DataFrame:
    """One row per run and seed that trained: the run's fields, `seed`, and that seed's
    metrics."""
    rows: dict[tuple[str, int], dict] = {}
    for run in runs.values():
        metrics = run_metrics(metrics_dir, run)
        failed = failed_seeds(metrics["train"])
        for m in metrics.values():
            for seed, values in m["seeds"].items():
                if int(seed) in failed:
                    continue
                key = (run.run_id, int(seed))
                row = rows.setdefault(key, run_fields(run) | {"seed": int(seed)})
                row |= {k: v for k, v in values.items() if k not in row}
    return pd.DataFrame(list(rows.values()))


def collect_flatness(runs: dict[str, Run], metrics_dir: Path) -> pd.DataFrame:
    """One row per run and seed in metrics/flatness/<run_id>.json (the flatness stage's,
    read through its schema): run_id, seed and that seed's metrics. A run without the
    file has no rows (the report says it was not measured); failed seeds are dropped by
    the study's join with `collect_seeds`."""
    rows = []
    for run_id in runs:
        path = Path(metrics_dir) / "flatness" / f"{run_id}.json"
        if path.is_file():
            seeds = read_metrics(path, FlatnessMetrics).model_dump()["seeds"]
            rows += [{"run_id": run_id, "seed": int(s)} | m for s, m in seeds.items()]
    return pd.DataFrame(rows)


def subjects(runs: pd.DataFrame):
    """(name, rows) per dataset, model, norm and tag."""
    for (dataset, model, norm, tag), g in runs.groupby(["dataset", "model", "norm", "tag"]):
        yield f"{dataset}-{model}-{norm}" + (f"-{tag}" if tag else ""), g


def read_rows(path: Path, seed: int, kind: str) -> pd.DataFrame:
    """The rows of one seed in a per-seed CSV (a landscape or a training log)."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the {kind} stage first)") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None
    if "seed" not in frame:
        raise DataError(f"{path}: no `seed` column; re-run the {kind} stage")
    rows = frame[frame.seed == seed]
    if rows.empty:
        raise DataError(f"{path}: has no rows for seed {seed}")
    return rows


def read_landscape(path: Path, seed: int) -> pd.DataFrame:
    """The rows of one seed in a landscape CSV (1D: alpha; 2D: alpha, beta)."""
    return read_rows(path, seed, "landscape")


def read_training_log(path: Path, seed: int) -> pd.DataFrame:
    """The per-epoch rows of one seed in a training log (epoch, lr, train_loss, ...)."""
    return read_rows(path, seed, "train")
