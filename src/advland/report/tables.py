"""Tables shared by the studies: values as mean ± 95% CI, the paper's tables beside
ours, and sharpness per run."""

from __future__ import annotations

import math

import pandas as pd

from advland.core.norms import NORMS
from advland.report.stats import CLAIMS, NotRun, Verdict


def eps_label(eps: float, norm: str) -> str:
    return NORMS[norm].label(eps)


def fmt(row: pd.Series, column: str, spec: str = ".4g", ci_spec: str = ".2g") -> str:
    """`row[column]` as text, with ` ± <ci95>` when the run has several seeds."""
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    ci = row.get(f"{column}_ci95")
    if ci is None or math.isnan(ci):
        return format(value, spec)
    return f"{value:{spec}} ± {ci:{ci_spec}}"


def paper_table(runs: pd.DataFrame, family: str, paper: dict) -> pd.DataFrame:
    """Our robust (PGD) accuracies beside the paper's, for every eps either one has;
    random-noise families add accuracy under their own noise."""
    ours = runs[runs.family == family].set_index("eps")
    norm, rand = ours.norm.iloc[0], (ours.noise == "rand").all()
    refs = {round(r["eps"] / paper.get("eps_unit", 1), 9): r for r in paper["rows"]}
    columns = {"PGD": "robust", "noise": "noise"} if rand else {"PGD": "robust"}
    rows = []
    for eps in sorted(set(refs) | {round(e, 9) for e in ours.index}):
        row = {"eps": eps_label(eps, norm)}
        if eps in refs:
            row |= {f"paper {k}": f"{refs[eps][k]:.2f}" for k in ("train", "test", "gap")}
        match = [e for e in ours.index if abs(e - eps) < 1e-9]
        if match:
            r = ours.loc[match[0]]
            for name, prefix in columns.items():
                row |= {
                    f"{name} train": fmt(r, f"{prefix}_train_acc", ".2f", ".2f"),
                    f"{name} test": fmt(r, f"{prefix}_test_acc", ".2f", ".2f"),
                    f"{name} gap": fmt(r, f"{prefix}_gap", ".2f", ".2f"),
                }
        rows.append(row)
    return pd.DataFrame(rows)


SHARPNESS = [
    "weight_norm",
    "lambda1",
    "lambda2",
    "lambda3",
    "trace",
    "max_rel_residual",
    "scaled_lambda1",
    "cf_lambda1",
    "curvature_1d",
]


def sharpness_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: ||w||, top Hessian eigenvalues and trace of the training objective, the
    largest Lanczos residual relative to its eigenvalue, lambda1 ||w||^2, the
    closed-form objective's lambda1 and the 1D curvature."""
    columns = [c for c in SHARPNESS if c in runs and runs[c].notna().any()]
    rows = []
    for _, r in runs.iterrows():
        rows.append(
            {"family": r.family, "eps": eps_label(r.eps, r.norm)} | {c: fmt(r, c) for c in columns}
        )
    return pd.DataFrame(rows)


def verdict_table(verdicts: list[Verdict], not_run: list[NotRun]) -> pd.DataFrame:
    """One row per claim and subject, in the order of stats.CLAIMS."""
    rows = [
        {
            "claim": v.claim,
            "subject": v.subject,
            "verdict": v.word,
            "key numbers": v.detail,
            "seeds agreeing": v.agreement,
        }
        for v in verdicts
    ] + [
        {"claim": n.claim, "subject": n.subject, "verdict": "not run", "key numbers": n.reason}
        for n in not_run
    ]
    columns = ["claim", "subject", "verdict", "key numbers", "seeds agreeing"]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.sort_values("claim", key=lambda c: c.map(list(CLAIMS).index), kind="stable")
    return frame.assign(claim=frame.claim.map(CLAIMS))
