"""The report: a verdict per claim, tables beside the paper's values, and figures.

Everything is computed from the pipeline's metrics and landscapes. Each study states
its own criteria (main_paper: Claims 1 and 2 on logistic regression; deep_nets:
Claim 3, both on the untagged runs only; spectra: Liu et al.'s top-20 eigenvalues;
remedies: tagged remedy runs against their plain runs; flatness: the flatness suite,
when metrics/flatness has files for the runs); the report gives them in
this order: a Summary of every verdict with the
figures that carry the story, the studies' sections, stage wall times, and, collapsed
at the end, the set-up actually used and every parameter.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from advland.core.config import Run
from advland.core.io import atomic_outputs
from advland.report import companion, deep_nets, finetune, flatness, main_paper, remedies, spectra
from advland.report.data import STAGES, Inputs, collect, collect_flatness, collect_seeds, failures
from advland.report.render import Document
from advland.report.stats import CLAIMS, Verdict
from advland.report.tables import eps_label, verdict_table

TITLE = "advland report: does adversarial training sharpen the weight loss landscape?"


def wall_times(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model and stage: sum, median and max over runs of the stage's wall time (all
    seeds of a run), and a total row per model."""
    rows = []
    for model, g in runs.groupby("model", sort=False):
        for stage in STAGES:
            t = g[f"{stage}_seconds"].dropna()
            rows.append(
                {
                    "model": model,
                    "stage": stage,
                    "runs": len(t),
                    "sum": t.sum(),
                    "median": t.median(),
                    "max": t.max(),
                }
            )
        total = sum(r["sum"] for r in rows[-len(STAGES) :])
        rows.append({"model": model, "stage": "all four", "runs": len(g), "sum": total})
    return pd.DataFrame(rows)


def setup(params: dict, data_info: dict[str, dict], runs: pd.DataFrame) -> Document:
    """The data, runs and parameters actually used."""
    doc = Document()
    doc.h("Data", 3)
    doc.p("From `data/prepared/<dataset>.json`:")
    doc.table(
        pd.DataFrame(
            [
                {
                    "dataset": name,
                    "source": info["source"],
                    "train": info["counts"]["train"]["total"],
                    "test": info["counts"]["test"]["total"],
                    "classes": ", ".join(info["classes"]),
                }
                for name, info in sorted(data_info.items())
            ]
        )
    )
    doc.h("Runs", 3)
    listing = runs[["run_id", "dataset", "model", "norm", "noise", "tag", "n_seeds"]].copy()
    listing.insert(5, "eps", [eps_label(e, n) for e, n in zip(runs.eps, runs.norm, strict=True)])
    doc.table(listing)
    doc.h("Parameters", 3)
    flat = pd.json_normalize({k: v for k, v in params.items() if k != "runs"}, sep=".")
    doc.p(f"`params.yaml` without `runs` (listed above), seeds {params['seeds']}:")
    doc.table(pd.DataFrame({"parameter": flat.columns, "value": [str(v) for v in flat.iloc[0]]}))
    return doc


def failed_note(failed: pd.DataFrame, n_runs: int, n_seeds: int) -> str:
    """One sentence on failed training runs for the Summary."""
    if failed.empty:
        return f"Every one of the {n_runs * n_seeds} trained models trained (none failed)."
    runs_hit = failed.run_id.nunique()
    return (
        f"**{len(failed)} of {n_runs * n_seeds} trained models failed** (in {runs_hit} "
        f"run{'s' * (runs_hit > 1)}: {', '.join(sorted(failed.run_id.unique()))}); they are "
        "left out of every mean and verdict and listed under Failed runs."
    )


def summary(verdicts: list[Verdict]) -> dict:
    """{claim key: {subject: {reproduced, the numbers, seeds_agree, n_seeds}}} for
    `dvc metrics show/diff`; a number that is not finite becomes null."""
    out: dict[str, dict] = {key: {} for key in CLAIMS}
    for v in verdicts:
        numbers = {k: float(x) if math.isfinite(x) else None for k, x in v.numbers.items()}
        out[v.claim][v.subject] = {
            "reproduced": v.reproduced,
            **numbers,
            "seeds_agree": v.seeds_agree,
            "n_seeds": v.n_seeds,
        }
    return out


def build_report(
    runs: dict[str, Run],
    metrics_dir: Path,
    landscapes_dir: Path,
    logs_dir: Path,
    params: dict,
    data_info: dict[str, dict],
    paper: dict,
    out_dir: Path,
    spectra_dir: Path,
    companion_dir: Path | None = None,
) -> dict:
    """Write report.md, report.html, figures/*.png and tables/runs.csv under out_dir;
    return the verdict summary (see `summary`) and the number of failed models."""
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    table, per_seed = collect(runs, metrics_dir), collect_seeds(runs, metrics_dir)
    failed = failures(runs, metrics_dir)
    inputs = Inputs(
        Path(landscapes_dir),
        Path(logs_dir),
        paper,
        params,
        figures,
        Path(spectra_dir),
        companion_dir and Path(companion_dir),
        Path(metrics_dir),
    )
    plain, plain_seeds = table[table.tag == ""], per_seed[per_seed.tag == ""]
    studies = [
        study.study(plain, plain_seeds, inputs)
        for study in (main_paper, deep_nets, spectra, companion, finetune)
    ]
    studies.append(remedies.study(table, per_seed, inputs))
    studies.append(flatness.study(table, per_seed, collect_flatness(runs, metrics_dir), inputs))
    verdicts = [v for s in studies for v in s.verdicts]
    n_seeds = len(params["seeds"])

    doc = Document()
    doc.h(TITLE, 1)
    doc.p(
        "Whether adversarial training makes the weight loss landscape sharper, judged by "
        "criteria fixed in advance on this pipeline's own metrics for the "
        f"{len(table)} runs × {n_seeds} seed{'s' * (n_seeds > 1)} in `params.yaml`, set "
        "beside Yamada et al. (2021); the paper's values are in `reports/paper_values.yaml`."
    )
    doc.h("Summary")
    doc.table(verdict_table(verdicts, [n for s in studies for n in s.not_run]))
    doc.p(failed_note(failed, len(runs), n_seeds))
    for s in studies:
        doc.blocks += s.highlights
    for s in studies:
        doc.extend(s.section)
    if not failed.empty:
        doc.h("Failed runs")
        doc.p(
            "Training failed (advland.train.training_status: clean training accuracy near "
            "chance, or a training objective that did not fall below that of the uniform "
            "predictor). These seeds are left out of every mean, table and verdict above."
        )
        doc.table(failed)
    doc.h("Stage wall times (seconds)")
    doc.p(
        "The stages' own work, per run covering all its seeds; DVC and process start-up "
        "add about 1.7 s per stage on top (README, Speed)."
    )
    doc.table(wall_times(table), ".1f")
    doc.details("Set-up actually used and all parameters", setup(params, data_info, table))

    paths = (out_dir / "report.md", out_dir / "report.html", out_dir / "tables" / "runs.csv")
    with atomic_outputs(*paths) as (md, page, csv):
        md.write_text(doc.markdown(out_dir))
        page.write_text(doc.html(TITLE))
        table.to_csv(csv, index=False)
    shown = set(doc.figures())
    for stale in set(figures.glob("*.png")) - shown:  # DVC keeps (persist) the folder
        stale.unlink()
    return summary(verdicts) | {"failed_models": len(failed)}
