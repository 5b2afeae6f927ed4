"""The main paper: Yamada et al. (2021), logistic regression trained with PGD or with
random noise of the same size.

The criteria are fixed here, before any number is seen:
- Claim 1 (adversarial training sharpens): for each adversarial family, reproduced when
  Spearman rho(eps, lambda1) >= 0.8 and the least-squares slope of lambda1 on eps is
  > 0; R^2 of that line says how close to linear the growth is. Checked also on
  lambda1 ||w||^2 and on the closed-form objective's lambda1.
- Claim 2 (random noise sharpens much less): per dataset, model and norm, the ratio
  lambda1_adv(eps) / lambda1_rand(eps) is > 1 at every eps > 0 both families have,
  and >= 2 at the largest such eps.
"""

from __future__ import annotations

import pandas as pd

from advland.core.norms import NORMS
from advland.report import figures as figs
from advland.report.data import LINEAR_MODELS, Inputs, subjects
from advland.report.render import Figure
from advland.report.stats import (
    RATIO_MIN,
    RHO_MIN,
    Check,
    NotRun,
    Study,
    Verdict,
    decide,
    linear_fit,
    spearman,
)
from advland.report.tables import eps_label, fmt, paper_table, sharpness_table

CLAIM1_COLUMNS = {
    "claim1": "lambda1",
    "claim1_scaled": "scaled_lambda1",
    "claim1_closed_form": "cf_lambda1",
}
CRITERIA = [
    f"**Claim 1** (adversarial training sharpens): for each adversarial (`adv`) family, "
    f"reproduced when Spearman ρ(eps, λ1) ≥ {RHO_MIN} and the least-squares slope of λ1 "
    "on eps is > 0. R² of that line says how close to linear the growth is. Also checked "
    "on λ1 ‖w‖² (`scaled_lambda1`) and on the closed-form objective's λ1 (`cf_lambda1`).",
    "**Claim 2** (random noise sharpens much less): per dataset, model and norm, "
    "λ1(adv) / λ1(rand) at equal eps is > 1 at every eps > 0 both families have, "
    f"and ≥ {RATIO_MIN:g} at the largest.",
    "Verdicts are decided on the mean over seeds; *seeds agreeing* counts the seeds whose "
    "own values, with the same criterion, give the same verdict.",
]
THEORY_CHECKS = [
    ("theory_gap_fixed", "closed-form Hessian (fixed inputs) vs autograd, max rel. error"),
    ("theory_gap_cf", "closed-form Hessian with delta*(w) vs autograd, max rel. error"),
    ("pgd_cf_max_abs_dev", "Linf: max |x_PGD - x_closed-form| on the test set"),
    ("pyhessian_rel_err", "PyHessian top-k vs exact, max rel. error"),
]


def rises(column: str) -> Check:
    """Claim 1's criterion on the rows of one family."""

    def check(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
        rho = spearman(rows.eps, rows[column])
        slope, _, r2 = linear_fit(rows.eps, rows[column])
        return rho >= RHO_MIN and slope > 0, {"rho": rho, "slope": slope, "r2": r2}

    return check


def claim1(
    runs: pd.DataFrame, per_seed: pd.DataFrame, key: str = "claim1"
) -> tuple[list[Verdict], list[NotRun]]:
    column = CLAIM1_COLUMNS[key]
    verdicts, not_run = [], []
    for family, g in runs[runs.noise == "adv"].groupby("family"):
        if column not in g or g[column].isna().any() or g.eps.nunique() < 3:
            not_run.append(NotRun(key, family, f"needs `{column}` at 3 or more eps"))
            continue
        verdicts.append(
            decide(
                key,
                family,
                rises(column),
                lambda n: f"ρ = {n['rho']:.3f}, slope {n['slope']:.4g}, R² = {n['r2']:.3f}",
                g,
                per_seed[per_seed.family == family],
            )
        )
    return verdicts, not_run


def ratios(rows: pd.DataFrame, column: str = "lambda1") -> dict[float, float]:
    """lambda1_adv / lambda1_rand at every eps > 0 that both noises have."""
    adv = rows[rows.noise == "adv"].set_index("eps")[column]
    rand = rows[rows.noise == "rand"].set_index("eps")[column]
    return {e: adv[e] / rand[e] for e in sorted(set(adv.index) & set(rand.index)) if e > 0}


def sharper_than_noise(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    """Claim 2's criterion on the runs of one dataset, model and norm."""
    r = ratios(rows)
    if not r:
        return False, {"top": float("nan"), "lowest": float("nan")}
    top, lowest = r[max(r)], min(r.values())
    return lowest > 1 and top >= RATIO_MIN, {"top": top, "lowest": lowest}


def claim2(runs: pd.DataFrame, per_seed: pd.DataFrame) -> tuple[list[Verdict], list[NotRun]]:
    verdicts, not_run = [], []
    for subject, g in subjects(runs):
        common = ratios(g) if "lambda1" in g else {}
        if not common:
            not_run.append(NotRun("claim2", subject, "needs adv and rand runs at a common eps > 0"))
            continue
        largest = eps_label(max(common), g.norm.iloc[0])
        verdicts.append(
            decide(
                "claim2",
                subject,
                sharper_than_noise,
                lambda n, largest=largest: (
                    f"λ1 adv / rand = {n['top']:.2f} at eps {largest}; lowest {n['lowest']:.2f}"
                ),
                g,
                per_seed[per_seed.run_id.isin(g.run_id)],
            )
        )
    return verdicts, not_run


def ratio_table(runs: pd.DataFrame) -> pd.DataFrame:
    """lambda1 of adversarial and random-noise training side by side at equal eps."""
    rows = []
    for subject, g in subjects(runs):
        adv = g[g.noise == "adv"].set_index("eps")
        rand = g[g.noise == "rand"].set_index("eps")
        for eps in sorted(set(adv.index) & set(rand.index)):
            a, r = adv.loc[eps], rand.loc[eps]
            rows.append(
                {
                    "subject": subject,
                    "eps": eps_label(eps, a.norm),
                    "λ1 adv": fmt(a, "lambda1"),
                    "λ1 rand": fmt(r, "lambda1"),
                    "adv / rand": f"{a.lambda1 / r.lambda1:.2f}",
                }
            )
    return pd.DataFrame(rows)


def theory_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    """The worst value of each theory check over all runs and seeds."""
    rows = [
        {"check": what, "worst": per_seed[c].max(), "runs × seeds": int(per_seed[c].notna().sum())}
        for c, what in THEORY_CHECKS
        if c in per_seed and per_seed[c].notna().any()
    ]
    if "cf_robust_test_acc" in per_seed:
        exact = per_seed.norm.map(lambda n: NORMS[n].exact_linear_box)  # Linf: PGD's optimum
        boxed = per_seed[exact & per_seed.cf_robust_test_acc.notna()]
        if not boxed.empty:
            rows.append(
                {
                    "check": "Linf: |PGD - closed-form| robust test accuracy (points)",
                    "worst": (boxed.robust_test_acc - boxed.cf_robust_test_acc).abs().max(),
                    "runs × seeds": len(boxed),
                }
            )
    return pd.DataFrame(rows)


def study(runs: pd.DataFrame, per_seed: pd.DataFrame, inputs: Inputs) -> Study:
    """Verdicts on Claims 1 and 2, the paper's Tables 1-4 beside ours, Figs. 2 and 3."""
    s = Study()
    doc = s.section
    doc.h("Main paper: logistic regression (Yamada et al. 2021)")
    lr = runs[runs.model.isin(LINEAR_MODELS)]
    lr_seeds = per_seed[per_seed.model.isin(LINEAR_MODELS)]
    if lr.empty:
        reason = "no logistic-regression runs in params.yaml"
        s.not_run = [NotRun(k, "logistic regression", reason) for k in (*CLAIM1_COLUMNS, "claim2")]
        doc.p(f"Not run: {reason}.")
        return s
    for key in CLAIM1_COLUMNS:
        verdicts, not_run = claim1(lr, lr_seeds, key)
        s.verdicts += verdicts
        s.not_run += not_run
    verdicts, not_run = claim2(lr, lr_seeds)
    s.verdicts += verdicts
    s.not_run += not_run

    doc.p("Criteria, fixed before any number was seen:")
    doc.bullets(CRITERIA)
    doc.p("The verdicts are in the Summary; the evidence follows.")
    doc.h("λ1 with adversarial and with random-noise training", 3)
    doc.table(ratio_table(lr))

    curves, points, objective = figs.notes(lr_seeds, inputs.params["landscape"])
    landscapes, out = inputs.landscapes, inputs.figures
    s.highlights = [
        Figure(
            figs.eigenvalues(lr, out / "fig3_eigenvalues.png"),
            "Fig. 3 analogue: the top-3 Hessian eigenvalues of the training objective against "
            f"eps, each with its least-squares line and R² ({points}). Look at: λ1 rising with "
            "eps in the `adv` panels (Claim 1) while it stays nearly flat in the `rand` panels "
            "(Claim 2).",
        ),
        Figure(
            figs.landscape_1d(lr, landscapes, lr_seeds.seed.iloc[0], out / "fig2_landscapes.png"),
            "Fig. 2 analogue: the training objective along one filter-normalized direction "
            f"(‖d‖ = ‖w‖), one curve per eps ({objective}; {curves}). Look at: the curves "
            "steepening as eps grows for PGD training but not for random noise.",
        ),
    ]

    doc.h("Robust accuracy and generalization gap beside the paper", 3)
    doc.p(
        "PGD columns: accuracy (%) under the evaluation PGD attack of the run's norm and eps; "
        "gap = |train - test| in points. The paper's random-noise tables look like accuracy "
        "under that random noise, so those tables also give `noise` columns (accuracy under "
        "the run's own training noise): compare the paper with `noise`, and read PGD as the "
        "stronger test."
    )
    tables = inputs.paper.get("tables", {})
    for family in sorted(lr.family.unique()):
        ref = tables.get(family)
        doc.h(ref["title"] if ref else f"{family} (no paper values)", 4)
        if ref and ref.get("attribution"):
            doc.p(f"Paper attribution: {ref['attribution']}.")
        doc.table(paper_table(lr, family, ref or {"rows": []}))

    doc.h("Sharpness", 3)
    doc.p(
        "Per run: ‖w‖, the top Hessian eigenvalues and trace of the training objective, "
        "λ1 ‖w‖², λ1 of the closed-form objective (the attack moving with w) and the "
        "curvature of the 1D landscape at alpha = 0. Figs. 2 and 3 are in the Summary."
    )
    doc.table(sharpness_table(lr))
    doc.figure(
        figs.eigenvalues(lr, out / "fig3_eigenvalues_scaled.png", prefix="scaled_lambda"),
        f"The eigenvalues of Fig. 3 times ‖w‖², the filter-normalized sharpness of logistic "
        f"regression ({points}). Look at: whether the rise with eps survives this rescaling, "
        "i.e. is not only a change in the size of w.",
    )
    doc.figure(
        figs.landscape_2d(lr, landscapes, lr_seeds.seed.iloc[0], out / "fig2_landscapes_2d.png"),
        "Fig. 2 in two dimensions: filled contours of the training objective over two "
        "filter-normalized directions around the trained weights (+), at the smallest, a "
        f"middle and the largest eps of each family, one log colour scale for every panel "
        f"({objective}; {curves}). Look at: the basin narrowing as eps grows in the `adv` "
        "rows, and not in the `rand` rows.",
    )

    doc.h("Theory checks", 3)
    doc.p("Closed forms against autograd and PyHessian; the worst value over all runs and seeds.")
    doc.table(theory_table(lr_seeds), ".3g")
    return s
