"""Deep networks: the paper's Claim 3 (ResNet18 on CIFAR10 and SVHN, Linf PGD) for
every non-linear model in the runs, and Claim 2 measured on the same nets.

The criteria are fixed here, before any number is seen:
- Claim 3 (deep nets get sharper, with a larger robust gap): per dataset, model and
  norm of PGD-trained deep nets, reproduced when Spearman rho(eps, lambda1) >= 0.8
  and Spearman rho(eps, robust gap) >= 0.8.
- Claim 2 on nets: main_paper's criterion (lambda1 adv / rand > 1 at every common
  eps > 0 and >= 2 at the largest), per dataset, model and norm.
Runs whose training failed never enter them (report.data.collect).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from advland.report import figures as figs
from advland.report.data import LINEAR_MODELS, Inputs, read_training_log, subjects
from advland.report.main_paper import claim2, ratio_table
from advland.report.stats import RATIO_MIN, RHO_MIN, NotRun, Study, Verdict, decide, spearman
from advland.report.tables import eps_label, fmt, paper_table, sharpness_table

CRITERIA = [
    "**Claim 3** (deep nets get sharper, with a larger robust gap): per dataset, model and "
    f"norm of PGD-trained (`adv`) deep nets, reproduced when Spearman ρ(eps, λ1) ≥ {RHO_MIN} "
    f"and Spearman ρ(eps, robust gap) ≥ {RHO_MIN}.",
    "**Claim 2 on deep nets** (random noise sharpens much less), which none of the four "
    "papers measured: the main paper's criterion, λ1(adv) / λ1(rand) at equal eps > 1 at "
    f"every eps > 0 both families have and ≥ {RATIO_MIN:g} at the largest.",
    "λ1 of a deep net comes from Lanczos iterations on a fixed subset of the training set "
    "with the attack fixed at the final weights (`hessian` in params.yaml; its residual "
    "‖Hv − λv‖ is in the sharpness table); the robust gap is |train − test| PGD accuracy "
    "in points. Runs whose training failed are left out.",
]
# The paper's ResNet18 tables, shown beside a deep net on another dataset for reference.
REFERENCE_TABLES = {"CIFAR10": "cifar10-resnet18-linf-adv", "SVHN": "svhn-resnet18-linf-adv"}


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


def accuracy_table(runs: pd.DataFrame, family: str, paper: dict) -> pd.DataFrame:
    """The Tables 5-6 analogue: clean and PGD train / test accuracy and gap per eps; for
    PGD-trained families the paper's ResNet18 PGD values (CIFAR10, SVHN) at equal eps
    for reference, for random-noise families the accuracy under their own noise."""
    ours = runs[runs.family == family].sort_values("eps")
    rand = bool((ours.noise == "rand").all())
    refs = {
        name: {round(r["eps"] / t.get("eps_unit", 1), 9): r for r in t["rows"]}
        for name, key in REFERENCE_TABLES.items()
        if (t := paper.get("tables", {}).get(key)) and not rand
    }
    kinds = [("clean", "clean"), ("PGD", "robust")] + [("noise", "noise")] * rand
    rows = []
    for _, r in ours.iterrows():
        row = {"eps": eps_label(r.eps, r.norm)}
        for kind, prefix in kinds:
            row |= {
                f"{kind} {split}": fmt(r, f"{prefix}_{split}_acc", ".2f", ".2f")
                for split in ("train", "test")
            }
            row[f"{kind} gap"] = fmt(r, f"{prefix}_gap", ".2f", ".2f")
        for name, ref in refs.items():
            match = ref.get(round(r.eps, 9))
            row[f"{name}† PGD train / test / gap"] = (
                f"{match['train']:.2f} / {match['test']:.2f} / {match['gap']:.2f}" if match else ""
            )
        rows.append(row)
    return pd.DataFrame(rows)


def absolute_falls(seeds: pd.DataFrame, logs: Path) -> dict[str, float]:
    """run_id -> mean over seeds of the epoch loss's fall over the last 20% of epochs:
    plateau_change is relative to the last epoch's loss, so times that seed's last loss."""
    falls: dict[str, list[float]] = {}
    for r in seeds.itertuples():
        last = read_training_log(logs / f"{r.run_id}.csv", r.seed).train_loss.iloc[-1]
        falls.setdefault(r.run_id, []).append(r.plateau_change * last)
    return {run_id: sum(v) / len(v) for run_id, v in falls.items()}


def training_table(runs: pd.DataFrame, seeds: pd.DataFrame, logs: Path) -> pd.DataFrame:
    """Per run: epochs, the final training objective, how much the epoch training loss
    still fell over the last 20% of the epochs (relative, and absolute), and clean
    training accuracy."""
    falls = absolute_falls(seeds, logs)
    return pd.DataFrame(
        [
            {
                "family": r.family,
                "eps": eps_label(r.eps, r.norm),
                "epochs": int(r.epochs),
                "final objective": fmt(r, "final_train_loss"),
                "fall over the last 20% of epochs": fmt(r, "plateau_change", ".2%", ".1%"),
                "absolute fall": f"{falls[r.run_id]:.4f}",
                "clean train acc (%)": fmt(r, "clean_train_acc_final", ".2f", ".2f"),
            }
            for _, r in runs.sort_values(["family", "eps"]).iterrows()
        ]
    )


def model_section(s: Study, m: pd.DataFrame, seeds: pd.DataFrame, inputs: Inputs) -> None:
    """Training, accuracy, sharpness and landscapes of one model's runs."""
    doc, out, model = s.section, inputs.figures, m.model.iloc[0]
    seed = seeds.seed.iloc[0]
    curves, points, objective = figs.notes(seeds, inputs.params["landscape"])
    doc.h(model, 3)
    doc.h("Training", 4)
    doc.table(training_table(m, seeds, inputs.logs))
    doc.figure(
        figs.training_curves(m, inputs.logs, seed, out / f"{model}_training.png"),
        f"{model}: the training objective of each epoch, one curve per eps ({curves}). "
        "Look at: every curve flattening before the last epoch (the sharpness of an "
        "unconverged model says little).",
    )
    tables = inputs.paper.get("tables", {})
    for family in sorted(m.family.unique()):
        ref = tables.get(family)
        if ref:
            doc.h(ref["title"], 4)
            doc.table(paper_table(m, family, ref))
            continue
        doc.h(f"{family}: accuracy (%) and generalization gap", 4)
        table = accuracy_table(m, family, inputs.paper)
        doc.table(table)
        if any("†" in c for c in table.columns):
            doc.p(
                "† The paper's ResNet18 Tables 5 and 6 (likely CIFAR10 and SVHN; the "
                "attribution is inferred), at the same eps: a different model on a different "
                "dataset, for reference only. Gap = |train − test| in points."
            )
    doc.h(f"{model}: sharpness", 4)
    doc.table(sharpness_table(m))
    if m.noise.nunique() > 1:
        doc.table(ratio_table(m))
    doc.figure(
        figs.landscape_1d(m, inputs.landscapes, seed, out / f"fig4_{model}_landscapes.png"),
        f"Fig. 4 analogue: the {model} training objective along one filter-normalized "
        f"direction, one curve per eps ({objective}; {curves}). Look at: the curves "
        "steepening and rising as eps grows.",
    )
    doc.figure(
        figs.landscape_2d(m, inputs.landscapes, seed, out / f"{model}_landscapes_2d.png"),
        f"{model} in two dimensions: filled contours of the training objective over two "
        "filter-normalized directions around the trained weights (+), smallest, a middle "
        f"and the largest eps of each family, one log colour scale ({objective}; {curves}).",
    )
    doc.figure(
        figs.eigenvalues(m, out / f"{model}_eigenvalues.png"),
        f"{model}: the top-3 Hessian eigenvalues of the training objective against eps, "
        f"each with its least-squares line and R² ({points}). Look at: λ1 rising with eps "
        "for `adv` (Claim 3) and less for `rand` (Claim 2).",
    )


def study(runs: pd.DataFrame, per_seed: pd.DataFrame, inputs: Inputs) -> Study:
    """Claims 3 and 2 on deep nets, their training, accuracy, sharpness and landscapes."""
    s = Study()
    doc = s.section
    doc.h("Deep networks (Claim 3, and Claim 2 on nets)")
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
    if (nets.noise == "rand").any():
        verdicts, not_run = claim2(nets, net_seeds)
        s.verdicts += verdicts
        s.not_run += not_run
    doc.p("The verdicts are in the Summary; the evidence follows.")
    for model in sorted(nets.model.unique()):
        m = nets[nets.model == model]
        model_section(s, m, net_seeds[net_seeds.model == model], inputs)
    return s
