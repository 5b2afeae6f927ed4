"""Deep networks: the paper's Claim 3 (ResNet18 on CIFAR10 and SVHN, Linf PGD), for
every non-linear model in the runs.

The criterion is fixed here, before any number is seen:
- Claim 3 (deep nets get sharper, with a larger robust gap): per dataset, model and
  norm of PGD-trained deep nets, reproduced when Spearman rho(eps, lambda1) >= 0.8
  and Spearman rho(eps, robust gap) >= 0.8.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from advland.report import figures as figs
from advland.report.data import LINEAR_MODELS, subjects
from advland.report.stats import RHO_MIN, NotRun, Study, Verdict, decide, spearman
from advland.report.tables import paper_table, sharpness_table

CRITERIA = [
    "**Claim 3** (deep nets get sharper, with a larger robust gap): per dataset, model and "
    f"norm of PGD-trained (`adv`) deep nets, reproduced when Spearman ρ(eps, λ1) ≥ {RHO_MIN} "
    f"and Spearman ρ(eps, robust gap) ≥ {RHO_MIN}.",
    "λ1 of a deep net comes from Lanczos iterations on a subset of the training set "
    "(`hessian` in params.yaml); the robust gap is |train - test| PGD accuracy in points.",
]


def sharper_and_gap(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    """Claim 3's criterion on the runs of one dataset, model and norm."""
    rho_l, rho_g = spearman(rows.eps, rows.lambda1), spearman(rows.eps, rows.robust_gap)
    return rho_l >= RHO_MIN and rho_g >= RHO_MIN, {"rho_lambda": rho_l, "rho_gap": rho_g}


def claim3(runs: pd.DataFrame, per_seed: pd.DataFrame) -> tuple[list[Verdict], list[NotRun]]:
    """Claim 3 for every (dataset, model, norm) of PGD-trained non-linear models."""
    nets = runs[~runs.model.isin(LINEAR_MODELS) & (runs.noise == "adv")]
    verdicts, not_run = [], []
    for subject, g in subjects(nets):
        if not {"lambda1", "robust_gap"} <= set(g) or g.eps.nunique() < 3:
            not_run.append(
                NotRun("claim3", subject, "needs λ1 and the robust gap at 3 or more eps")
            )
            continue
        verdicts.append(
            decide(
                "claim3",
                subject,
                sharper_and_gap,
                lambda n: f"ρ(eps, λ1) = {n['rho_lambda']:.3f}, ρ(eps, gap) = {n['rho_gap']:.3f}",
                g,
                per_seed[per_seed.run_id.isin(g.run_id)],
            )
        )
    return verdicts, not_run


def study(
    runs: pd.DataFrame,
    per_seed: pd.DataFrame,
    landscapes: Path,
    paper: dict,
    out: Path,
    attack: str,
) -> Study:
    """Claim 3, robust accuracy beside the paper, Fig. 4 and eigenvalues per model."""
    s = Study()
    doc = s.section
    doc.h("Deep networks (Claim 3)")
    doc.p("Criteria, fixed before any number was seen:")
    doc.bullets(CRITERIA)
    nets = runs[~runs.model.isin(LINEAR_MODELS)]
    net_seeds = per_seed[per_seed.run_id.isin(nets.run_id)]
    if nets.empty:
        reason = "no deep-net runs in params.yaml (every run is logistic regression)"
        s.not_run = [NotRun("claim3", "deep nets", reason)]
        doc.p(f"Not run: {reason}.")
        return s
    s.verdicts, s.not_run = claim3(nets, net_seeds)
    doc.p("The verdicts are in the Summary; the evidence follows.")

    curves, points, objective = figs.notes(net_seeds, attack)
    tables = paper.get("tables", {})
    for model in sorted(nets.model.unique()):
        m = nets[nets.model == model]
        doc.h(model, 3)
        for family in sorted(m.family.unique()):
            ref = tables.get(family)
            doc.h(ref["title"] if ref else f"{family} (no paper values)", 4)
            if ref and ref.get("attribution"):
                doc.p(f"Paper attribution: {ref['attribution']}.")
            doc.table(paper_table(m, family, ref or {"rows": []}))
        doc.h(f"{model}: sharpness", 4)
        doc.table(sharpness_table(m))
        doc.figure(
            figs.landscape_1d(
                m, landscapes, net_seeds.seed.iloc[0], out / f"fig4_{model}_landscapes.png"
            ),
            f"Fig. 4 analogue: the {model} training objective along one filter-normalized "
            f"direction, one curve per eps ({objective}; {curves}). Look at: the curves "
            "steepening and rising as eps grows.",
        )
        doc.figure(
            figs.eigenvalues(m, out / f"{model}_eigenvalues.png"),
            f"{model}: the top-3 Hessian eigenvalues of the training objective against eps, "
            f"each with its least-squares line and R² ({points}). Look at: λ1 rising with eps "
            "(Claim 3).",
        )
    return s
