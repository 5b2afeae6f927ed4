"""The flatness suite (issue 26): do scale-invariant and robust sharpness measures tell the
same story as lambda1, and does any of them predict the robust generalization gap?

Each measure (MEASURES) is taken of three targets (TARGETS): the run's own training
objective at its own eps, the robust loss at the common evaluation eps of its dataset
and norm, and the clean loss. A measure with a rho grid (params flatness.<dataset>.
<model>) is represented by its value at the middle rho, index (K + 1) // 2 of K (1-based).

The criteria are fixed here, before any number is seen:
- Claims 1 and 3 under each measure and target: main_paper's Claim 1 criterion
  (Spearman rho(eps, measure) >= 0.8 and a positive least-squares slope, per PGD-trained
  logistic-regression family) and deep_nets' Claim 3 criterion (rho(eps, measure) >= 0.8
  and rho(eps, robust gap) >= 0.8, per dataset, model and norm of PGD-trained nets),
  with the measure in place of lambda1, on the untagged runs. The gap is the run's own
  eps's (evaluate) for the own target, the common eps's (flatness) for the others.
- Rank correlations: Kendall tau-b of each measure with the robust gap and with the
  robust test loss (both at the common eps) over every run, seed and remedy of a
  group (dataset, model, norm: measures are not comparable across architectures, and
  the common eps is per norm), with a percentile bootstrap 95% CI (N_BOOT resamples of
  the run-seed pairs, seed 0), and Jiang et al.'s granulated tau with the gap along AXES.
- A measure "predicts the robust gap" iff the bootstrap 95% CI of tau(measure under the
  common robust target, robust gap) lies entirely above 0 in every group with >= MIN_RUNS
  runs measured; else it "does not predict the robust gap" (undecided when no group has
  MIN_RUNS runs).
"""

from __future__ import annotations

import pandas as pd

from advland.report.data import LINEAR_MODELS, Inputs, subjects
from advland.report.deep_nets import sharper_and_gap
from advland.report.main_paper import rises
from advland.report.rank import bootstrap_ci, granulated_tau, kendall_tau
from advland.report.stats import RHO_MIN, Study, decide
from advland.report.tables import eps_label

TARGETS = {  # target -> the loss it measures, as a column header
    "own": "own objective (own eps)",
    "robust": "robust loss (common eps)",
    "clean": "clean loss",
}
MEASURES = {  # key in metrics/flatness -> (what it is, its rho grid in flatness.<d>.<m>)
    "adaptive_lambda1": ("adaptive λ1 of T H T", None),
    "adaptive_trace": ("adaptive trace of T H T", None),
    "avg_plain": ("average-case, plain", ("average", "rho_plain")),
    "avg_adaptive": ("average-case, adaptive", ("average", "rho_adaptive")),
    "worst_l2_plain": ("worst-case L2, plain", ("worst", "rho", "l2_plain")),
    "worst_l2_adaptive": ("worst-case L2, adaptive", ("worst", "rho", "l2_adaptive")),
    "worst_linf_plain": ("worst-case Linf, plain", ("worst", "rho", "linf_plain")),
    "worst_linf_adaptive": ("worst-case Linf, adaptive", ("worst", "rho", "linf_adaptive")),
    "rflat_avg": ("robust flatness, average (Stutz)", None),
    "rflat_worst": ("robust flatness, worst case (Stutz)", None),
}
GAP = {"own": "own_robust_gap", "robust": "robust_gap", "clean": "robust_gap"}
FIELDS = ["run_id", "family", "dataset", "model", "norm", "noise", "eps", "tag"]
GROUP = ["dataset", "model", "norm"]
AXES = ["eps", "noise", "remedy", "capacity"]  # Jiang et al.'s axes of variation
MIN_RUNS, N_BOOT = 6, 1000
PREDICTS = (
    "predicts the robust gap iff the bootstrap 95% CI of Kendall τ(measure under the common "
    "robust target at the middle ρ, robust gap at the common eps) lies entirely above 0 in "
    f"every dataset-model-norm group with ≥ {MIN_RUNS} runs measured"
)
CRITERIA = [
    f"**Claims 1 and 3 under each measure**: main_paper's Claim 1 criterion (Spearman "
    f"ρ(eps, measure) ≥ {RHO_MIN} and a positive slope, per PGD-trained logistic-regression "
    f"family) and deep_nets' Claim 3 criterion (ρ(eps, measure) ≥ {RHO_MIN} and ρ(eps, "
    f"robust gap) ≥ {RHO_MIN}, per dataset, model and norm of PGD-trained nets), the measure "
    "in place of λ1, on the untagged runs. Claim 3's gap is at the run's own eps for the own "
    "target, at the common eps for the others.",
    "**Rank correlations**: Kendall τ-b of each measure with the robust gap and the robust "
    "test loss at the common eps, over every run, seed and remedy of a dataset, model and "
    "norm, with a percentile bootstrap 95% CI "
    f"({N_BOOT} resamples of the run-seed pairs); Jiang et al.'s granulated τ with the gap "
    f"along {', '.join(AXES)} (n/a: the axis never varies with the others fixed).",
    f"**Predicting the robust gap**: a measure {PREDICTS}; otherwise it does not.",
    "A measure with a ρ grid is taken at its middle ρ, index (K + 1) // 2 of K.",
]


def dig(mapping: dict | None, *keys: str):
    """mapping[k1][k2]...; None where a level is missing or None."""
    for key in keys:
        mapping = (mapping or {}).get(key)
    return mapping


def column(target: str, measure: str) -> str:
    return f"{target}_{measure}"


def representatives(seeds: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, dict]:
    """`seeds` with a column `<target>_<measure>` per target and measure: the measure's
    value (at the middle rho of its grid), NaN where not measured; and the middle rho
    per (dataset, model, measure)."""
    out, rhos = seeds.copy(), {}
    for measure, (_, path) in MEASURES.items():
        for target in TARGETS:
            name = column(target, measure)
            out[name] = seeds[name] if path is None and name in seeds else float("nan")
        if path is None:
            continue
        for (dataset, model), g in seeds.groupby(["dataset", "model"]):
            grid = dig(params, "flatness", dataset, model, *path)
            if not grid:
                continue
            i = (len(grid) + 1) // 2
            rhos[dataset, model, measure] = grid[i - 1]
            for target in TARGETS:
                if (source := f"{column(target, measure)}_{i}") in g:
                    out.loc[g.index, column(target, measure)] = g[source]
    return out, rhos


def capacity(params: dict, run_id: str, dataset: str, model: str) -> str:
    """The model width the run trained with (its own train override, else train.<d>.<m>)."""
    width = dig(params, "runs", run_id, "train", "model", "width") or dig(
        params, "train", dataset, model, "model", "width"
    )
    return "default" if width is None else str(width)


def measured(
    per_seed: pd.DataFrame, flat: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-seed rows of the seeds that trained and were measured: the run's fields,
    lambda1, the robust gap at the run's own eps (own_robust_gap), the flatness metrics,
    remedy, capacity and the representative columns; their mean over seeds per run; and
    the middle rhos."""
    own = per_seed[[*FIELDS, "seed", "lambda1", "robust_gap"]]
    rows = own.rename(columns={"robust_gap": "own_robust_gap"}).merge(flat, on=["run_id", "seed"])
    rows["remedy"] = rows.tag.replace("", "none")
    rows["capacity"] = [
        capacity(params, r.run_id, r.dataset, r.model) for r in rows.itertuples(index=False)
    ]
    rows, rhos = representatives(rows, params)
    keys = [*FIELDS, "remedy", "capacity"]
    mean = rows.groupby(keys, sort=False).mean(numeric_only=True).reset_index()
    return rows, mean.drop(columns="seed"), rhos


def claim_cell(claim: str, rows: pd.DataFrame, seeds: pd.DataFrame, sharp: str, gap: str) -> str:
    """The verdict of Claim 1 or 3 with `sharp` in place of lambda1 (and `gap` as the
    robust gap), decided as the report decides it, in words."""
    if rows[sharp].isna().any():
        return "not measured"
    if rows.eps.nunique() < 3:
        return "not run: needs 3 or more eps"
    if claim == "Claim 1":
        v = decide("claim1", "", rises(sharp), lambda n: f"ρ {n['rho']:.2f}", rows, seeds)
    else:

        def swap(f: pd.DataFrame) -> pd.DataFrame:
            return f.assign(lambda1=f[sharp], robust_gap=f[gap])

        def describe(n: dict) -> str:
            return f"ρ {n['rho_lambda']:.2f}, gap ρ {n['rho_gap']:.2f}"

        v = decide("claim3", "", sharper_and_gap, describe, swap(rows), swap(seeds))
    return f"{v.word} ({v.detail}; {v.agreement} seeds)"


def claim_subjects(mean: pd.DataFrame, rows: pd.DataFrame):
    """(claim, subject, mean rows, per-seed rows) of Claims 1 and 3 on the untagged
    PGD-trained runs: Claim 1 per linear family, Claim 3 per net dataset, model and norm."""
    adv = mean[(mean.tag == "") & (mean.noise == "adv")]
    linear = adv.model.isin(LINEAR_MODELS)
    for family, g in adv[linear].groupby("family"):
        yield "Claim 1", family, g, rows[rows.run_id.isin(g.run_id)]
    for subject, g in subjects(adv[~linear]):
        yield "Claim 3", subject, g, rows[rows.run_id.isin(g.run_id)]


def claims_table(mean: pd.DataFrame, rows: pd.DataFrame, rhos: dict) -> pd.DataFrame:
    """Claims 1 and 3 per subject and measure under each target, beside lambda1's verdict
    on the same runs."""
    out = []
    for claim, subject, g, seeds in claim_subjects(mean, rows):
        today = claim_cell(claim, g, seeds, "lambda1", "own_robust_gap")
        common = eps_label(g.eval_eps.iloc[0], g.norm.iloc[0])
        for measure, (label, _) in MEASURES.items():
            rho = rhos.get((g.dataset.iloc[0], g.model.iloc[0], measure))
            out.append(
                {
                    "claim": claim,
                    "subject": subject,
                    "measure": label,
                    "ρ (middle of grid)": rho,
                    "common eps": common,
                }
                | {"λ1 (hessian stage, own objective)": today}
                | {
                    header: claim_cell(claim, g, seeds, column(t, measure), GAP[t])
                    for t, header in TARGETS.items()
                }
            )
    return pd.DataFrame(out)


def rank_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per group (dataset, model, norm), measure and target: runs measured, Kendall tau
    with the robust gap and the robust test loss at the common eps, their bootstrap 95%
    CIs, and the granulated tau with the gap along AXES (None: not varied) and its mean."""
    out = []
    for (dataset, model, norm), g in rows.groupby(GROUP, sort=False):
        for measure in MEASURES:
            for target in TARGETS:
                name = column(target, measure)
                ok = g[g[name].notna()]
                row = {"dataset": dataset, "model": model, "norm": norm, "measure": measure,
                       "target": target, "runs": ok.run_id.nunique(), "points": len(ok)}  # fmt: skip
                for what, to in (("gap", "robust_gap"), ("loss", "robust_test_loss")):
                    lo, hi = bootstrap_ci(ok[name], ok[to], kendall_tau, N_BOOT)
                    row |= {what: kendall_tau(ok[name], ok[to]), f"{what}_lo": lo, f"{what}_hi": hi}
                granulated = granulated_tau(ok, name, "robust_gap", AXES) if len(ok) else {}
                out.append(row | {f"g_{k}": granulated.get(k) for k in [*AXES, "mean"]})
    return pd.DataFrame(out)


def predicts(ranks: pd.DataFrame, measure: str) -> tuple[str, str]:
    """The robust-gap verdict of one measure from `rank_table`, in words, and the CIs it
    rests on: "predicts the robust gap" or "does not predict the robust gap" (PREDICTS),
    "undecided" when no group has MIN_RUNS runs measured, "not measured" when none has one."""
    mine = ranks[(ranks.measure == measure) & (ranks.target == "robust")]
    decisive = mine[mine.runs >= MIN_RUNS]
    if not mine.runs.any():
        return "not measured", "no run has it under the robust target"
    if decisive.empty:
        return "undecided", f"no group has {MIN_RUNS} runs measured (most: {mine.runs.max()})"
    cis = "; ".join(
        f"{r.dataset}-{r.model}-{r.norm}: {interval(r.gap_lo, r.gap_hi)} ({r.runs} runs)"
        for r in decisive.itertuples()
    )
    word = "predicts" if (decisive.gap_lo > 0).all() else "does not predict"
    return f"{word} the robust gap", f"95% CI of τ with the gap: {cis}"


def verdict_table(ranks: pd.DataFrame) -> pd.DataFrame:
    """One verdict row per measure, with the CIs and the criterion as the detail."""
    out = []
    for measure, (label, _) in MEASURES.items():
        word, cis = predicts(ranks, measure)
        out.append({"measure": label, "verdict": word, "detail": f"{cis}. Criterion: {PREDICTS}."})
    return pd.DataFrame(out)


def interval(lo: float, hi: float) -> str:
    return "n/a (τ undefined: a constant)" if pd.isna(lo) else f"[{lo:.2f}, {hi:.2f}]"


def tau_cell(tau: float, lo: float, hi: float) -> str:
    return "n/a (constant)" if pd.isna(tau) else f"{tau:.2f} {interval(lo, hi)}"


def rank_cells(ranks: pd.DataFrame) -> pd.DataFrame:
    """`rank_table` in words: τ [95% CI]; "not measured" where no run has the measure
    under that target (one row for every target when none has it)."""
    unmeasured = ranks.groupby([*GROUP, "measure"]).runs.transform("sum") == 0
    out = []
    for r, none in zip(ranks.itertuples(), unmeasured, strict=True):
        if none and r.target != next(iter(TARGETS)):
            continue
        row = {"group": f"{r.dataset}-{r.model}-{r.norm}", "measure": MEASURES[r.measure][0],
               "target": "every target" if none else TARGETS[r.target], "runs": r.runs}  # fmt: skip
        if r.runs == 0:
            out.append(row | {"τ with robust gap": "not measured"})
            continue
        row["τ with robust gap"] = tau_cell(r.gap, r.gap_lo, r.gap_hi)
        row["τ with robust test loss"] = tau_cell(r.loss, r.loss_lo, r.loss_hi)
        for k in [*AXES, "mean"]:
            value = getattr(r, f"g_{k}")
            row[f"granulated τ: {k}"] = "n/a" if value is None or pd.isna(value) else f"{value:.2f}"
        out.append(row)
    return pd.DataFrame(out)


def study(runs: pd.DataFrame, per_seed: pd.DataFrame, flat: pd.DataFrame, inputs: Inputs) -> Study:
    """The flatness suite's section: Claims 1 and 3 under every measure, rank correlations
    with the robust gap, and a verdict per measure; a one-line note when nothing is measured."""
    s = Study()
    doc = s.section
    doc.h("Flatness suite: scale-invariant and robust sharpness")
    rows, mean, rhos = measured(per_seed, flat, inputs.params) if len(flat) else (flat, flat, {})
    if rows.empty:
        doc.p("Not measured: run the flatness stage (no metrics/flatness/<run_id>.json).")
        return s
    doc.p(
        f"{mean.run_id.nunique()} of {len(runs)} runs measured. Targets: the run's own "
        "training objective at its own eps, the robust loss at the common evaluation eps of "
        "its dataset and norm, and the clean loss. Criteria, fixed before any number was seen:"
    )
    doc.bullets(CRITERIA)
    ranks = rank_table(rows)
    doc.h("Which measure predicts the robust gap", 3)
    doc.table(verdict_table(ranks))
    doc.h("Claims 1 and 3 under every measure and target", 3)
    doc.table(claims_table(mean, rows, rhos), ".3g")
    doc.h("Rank correlations with the robust gap and the robust test loss", 3)
    doc.table(rank_cells(ranks))
    return s
