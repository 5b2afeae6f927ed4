"""Remedies for sharpness, side by side: each tagged run (eps warm-up, EntropySGD, AWP)
against the plain run of the same dataset, model, norm, noise and eps.

The criteria are fixed here, before any number is seen, one verdict per remedy run:
- Liu et al. (warmup_lin, warmup_cos): robust test accuracy at least the plain run's
  (minus ACC_TOL points) and a lower lambda1.
- Kanai et al. (esgd): EntropySGD reaches the target robust training loss in fewer
  gradient epochs than plain training, and has a higher robust test accuracy. The target
  is the larger of the two runs' last-epoch training losses (both reach it); an epoch of
  entropy_sgd counts as L gradient epochs (train metrics `gradient_epochs`), so both are
  charged for the weight gradients they computed.
- Wu et al. (awp): a lower lambda1 and a smaller robust gap |train - test|.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from advland.report import figures as figs
from advland.report.data import Inputs, read_training_log
from advland.report.stats import NotRun, Study, Verdict, decide
from advland.report.tables import eps_label, fmt

ACC_TOL = 0.1  # points of robust test accuracy that count as "at least as good"
REMEDIES = {  # tag -> (claim key, what it is)
    "warmup_lin": ("remedy_warmup", "eps warm-up, linear (Liu et al.)"),
    "warmup_cos": ("remedy_warmup", "eps warm-up, cosine (Liu et al.)"),
    "esgd": ("remedy_esgd", "EntropySGD (Kanai et al.)"),
    "awp": ("remedy_awp", "AWP (Wu et al.)"),
}
CRITERIA = [
    "**Liu et al.** (eps warm-up): robust test accuracy at least the plain run's "
    f"(− {ACC_TOL} points) and a lower λ1.",
    "**Kanai et al.** (EntropySGD): reaches the target robust training loss (the larger of "
    "the two runs' last-epoch losses) in fewer gradient epochs than plain training, and a "
    "higher robust test accuracy. An EntropySGD epoch (one pass of outer steps) counts as L "
    "gradient epochs: each outer step takes L inner gradients, each with its own attack.",
    "**Wu et al.** (AWP): a lower λ1 and a smaller robust gap |train − test|.",
    "Each remedy run is compared with the plain run of the same dataset, model, norm and "
    "eps (`runs` without a tag); training curves are the epoch means of the training "
    "objective (AWP's at w + v, warm-up's at that epoch's eps(t)).",
]


def setting(row) -> str:
    return f"{row.dataset}-{row.model}-{row.norm}-{row.noise}-{eps_label(row.eps, row.norm)}"


def pairs(runs: pd.DataFrame) -> list[tuple[pd.Series, pd.Series]]:
    """(plain row, remedy row) for every run tagged with a remedy that has a plain run."""
    keys = ["dataset", "model", "norm", "noise", "eps"]
    plain = {tuple(r[k] for k in keys): r for _, r in runs[runs.tag == ""].iterrows()}
    out = []
    for _, r in runs[runs.tag.isin(list(REMEDIES))].iterrows():
        if (p := plain.get(tuple(r[k] for k in keys))) is not None:
            out.append((p, r))
    return out


def gradient_epochs_to(curve: list[float], per_epoch: float, target: float) -> float:
    """Gradient epochs at the end of the first epoch whose loss is <= target (nan: never)."""
    hits = [i for i, loss in enumerate(curve) if loss <= target + 1e-12]
    return (hits[0] + 1) * per_epoch if hits else math.nan


def per_epoch(row) -> float:
    g = row.get("gradient_epochs")
    return 1.0 if g is None or (isinstance(g, float) and math.isnan(g)) else g / row["epochs"]


def with_curves(frame: pd.DataFrame, per_seed: pd.DataFrame, logs: Path) -> pd.DataFrame:
    """`frame` with a `curve` column: the epoch training losses, of the row's seed (per-seed
    rows) or their mean over the run's seeds (mean rows)."""
    curves = {}
    for r in per_seed.itertuples():
        curves.setdefault(r.run_id, {})[r.seed] = list(
            read_training_log(logs / f"{r.run_id}.csv", r.seed).train_loss
        )
    out = frame.copy()
    if "seed" in out:
        out["curve"] = [curves[r][s] for r, s in zip(out.run_id, out.seed, strict=True)]
    else:
        out["curve"] = [list(np.mean(list(curves[r].values()), axis=0)) for r in out.run_id]
    return out


def trained_in_all(per_seed: pd.DataFrame, run_ids: list[str]) -> pd.DataFrame:
    """The rows of `run_ids`, for the seeds in which every one of them trained."""
    rows = per_seed[per_seed.run_id.isin(run_ids)]
    return rows.groupby("seed").filter(lambda g: g.run_id.nunique() == len(run_ids))


def _split(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    return rows[rows.tag == ""].iloc[0], rows[rows.tag != ""].iloc[0]


def warmup_check(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    p, r = _split(rows)
    n = {"acc_plain": p.robust_test_acc, "acc": r.robust_test_acc}
    n |= {"lambda1_plain": p.lambda1, "lambda1": r.lambda1}
    return bool(n["acc"] >= n["acc_plain"] - ACC_TOL and n["lambda1"] < n["lambda1_plain"]), n


def awp_check(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    p, r = _split(rows)
    n = {"lambda1_plain": p.lambda1, "lambda1": r.lambda1}
    n |= {"gap_plain": p.robust_gap, "gap": r.robust_gap}
    return bool(n["lambda1"] < n["lambda1_plain"] and n["gap"] < n["gap_plain"]), n


def esgd_check(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    p, r = _split(rows)
    target = max(p.curve[-1], r.curve[-1])
    n = {
        "target_loss": target,
        "grad_epochs_plain": gradient_epochs_to(p.curve, per_epoch(p), target),
        "grad_epochs": gradient_epochs_to(r.curve, per_epoch(r), target),
        "acc_plain": p.robust_test_acc,
        "acc": r.robust_test_acc,
    }
    faster = n["grad_epochs"] < n["grad_epochs_plain"]
    return bool(faster and n["acc"] > n["acc_plain"]), n


CHECKS = {"remedy_warmup": warmup_check, "remedy_esgd": esgd_check, "remedy_awp": awp_check}
DESCRIBE = {
    "remedy_warmup": lambda n: (
        f"robust test {n['acc']:.2f}% vs plain {n['acc_plain']:.2f}%, "
        f"λ1 {n['lambda1']:.4g} vs {n['lambda1_plain']:.4g}"
    ),
    "remedy_esgd": lambda n: (
        f"to loss {n['target_loss']:.4f}: {n['grad_epochs']:g} vs plain "
        f"{n['grad_epochs_plain']:g} gradient epochs; robust test {n['acc']:.2f}% vs "
        f"{n['acc_plain']:.2f}%"
    ),
    "remedy_awp": lambda n: (
        f"λ1 {n['lambda1']:.4g} vs plain {n['lambda1_plain']:.4g}, robust gap "
        f"{n['gap']:.2f} vs {n['gap_plain']:.2f} points"
    ),
}


def remedy_table(found: list[tuple[pd.Series, pd.Series]]) -> pd.DataFrame:
    """Per setting: the plain run, then each remedy."""
    rows, seen = [], set()
    for p, r in found:
        for row, name in ((p, "plain"), (r, REMEDIES[r.tag][1])):
            if row.run_id in seen:
                continue
            seen.add(row.run_id)
            rows.append(
                {
                    "setting": setting(row),
                    "remedy": name,
                    "λ1": fmt(row, "lambda1"),
                    "trace": fmt(row, "trace"),
                    "robust train (%)": fmt(row, "robust_train_acc", ".2f", ".2f"),
                    "robust test (%)": fmt(row, "robust_test_acc", ".2f", ".2f"),
                    "gap": fmt(row, "robust_gap", ".2f", ".2f"),
                    "epochs (gradient epochs)": f"{int(row.epochs)} ({per_epoch(row) * row.epochs:g})",
                    "train s": f"{row.get('train_seconds', math.nan):.1f}",
                    "all stages s": f"{sum(row.get(f'{s}_seconds', 0) for s in STAGE_NAMES):.1f}",
                }
            )
    return pd.DataFrame(rows)


STAGE_NAMES = ("train", "evaluate", "hessian", "landscape")


def figure(found, curves: pd.DataFrame, out: Path) -> Path:
    """Per setting: λ1 and robust test accuracy per remedy (bars), and the training loss
    against gradient epochs (curves)."""
    settings = sorted({setting(p) for p, _ in found})
    fig, axes = plt.subplots(
        3, len(settings), figsize=(3.6 * len(settings), 8.4), squeeze=False, layout="constrained"
    )
    for j, name in enumerate(settings):
        group = [(p, r) for p, r in found if setting(p) == name]
        rows = [group[0][0]] + [r for _, r in group]
        labels = ["plain"] + [r.tag for _, r in group]
        x = np.arange(len(rows))
        for i, (col, title) in enumerate((("lambda1", "λ1"), ("robust_test_acc", "robust test %"))):
            ax = axes[i][j]
            ax.bar(x, [r[col] for r in rows], color=[f"C{k}" for k in x])
            ax.set_xticks(x, labels, rotation=30, fontsize=7)
            ax.set_title(f"{name}\n{title}" if i == 0 else title, fontsize=8)
            if col == "robust_test_acc":
                lo = min(r[col] for r in rows)
                ax.set_ylim(max(0, lo - 2), min(100, max(r[col] for r in rows) + 1))
        ax = axes[2][j]
        for k, (row, label) in enumerate(zip(rows, labels, strict=True)):
            curve = curves.loc[curves.run_id == row.run_id, "curve"].iloc[0]
            step = per_epoch(row)
            ax.plot(
                step * np.arange(1, len(curve) + 1), curve, "o-", ms=2, color=f"C{k}", label=label
            )
        ax.set_yscale("log")
        ax.set_xlabel("gradient epochs")
        ax.set_ylabel(figs.OBJECTIVE, fontsize=7)
        ax.legend(fontsize=6)
    return figs.save(fig, out)


def study(runs: pd.DataFrame, per_seed: pd.DataFrame, inputs: Inputs) -> Study:
    """The remedies' verdicts, their side-by-side table and figure."""
    s = Study()
    doc = s.section
    doc.h("Remedies for sharpness (eps warm-up, EntropySGD, AWP)")
    doc.p("Criteria, fixed before any number was seen:")
    doc.bullets(CRITERIA)
    found = pairs(runs)
    if not found:
        reason = "no tagged remedy run with a plain run of the same setting in params.yaml"
        s.not_run = [NotRun(key, "remedies", reason) for key in sorted(set(CHECKS))]
        doc.p(f"Not run: {reason}.")
        return s
    ids = {x.run_id for pair in found for x in pair}
    seeds = per_seed[per_seed.run_id.isin(ids)]
    mean = with_curves(runs[runs.run_id.isin(ids)], seeds, inputs.logs)
    seeds = with_curves(seeds, seeds, inputs.logs)
    for p, r in found:
        key = REMEDIES[r.tag][0]
        both = [p.run_id, r.run_id]
        verdict: Verdict = decide(
            key,
            r.run_id,
            CHECKS[key],
            DESCRIBE[key],
            mean[mean.run_id.isin(both)],
            trained_in_all(seeds, both),
        )
        s.verdicts.append(verdict)
    doc.p("The verdicts are in the Summary; the evidence follows.")
    doc.table(remedy_table(found))
    out = figure(found, mean, inputs.figures / "remedies.png")
    doc.figure(
        out,
        "Remedies side by side, per setting: λ1 and robust test accuracy of the plain run and "
        "each remedy, and the training loss against gradient epochs (EntropySGD: L per "
        "epoch). Look at: lower λ1 bars with robust accuracy kept (warm-up, AWP), and "
        "EntropySGD's curve below the plain one.",
    )
    s.highlights.append(doc.blocks[-1])
    return s
