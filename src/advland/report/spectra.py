"""Companion study: Hessian spectra (Liu et al. 2020): the whole spectrum of logistic
regression, the top-20 eigenvalues against eps, and landscapes along the top-2
eigenvectors beside the random filter-normalized ones.

The criterion is fixed here, before any number is seen:
- Liu (the top-20 eigenvalues rise with eps): per dataset, model and norm of PGD-trained
  (`adv`) runs at 3 or more eps, reproduced when Spearman rho(eps, lambda_k) >= 0.8 for at
  least 75% of k = 1..20 (15 of 20). A Ritz value whose residual ||Hv - theta v|| is more
  than 1% of it at some eps is not converged, and its k counts as not rising.
Eigenvalues come from `spectra/values/<run_id>.csv` (the hessian stage: exact, or Lanczos
Ritz values with residuals); the landscapes from `landscapes/eigen{1d,2d}/<run_id>.csv`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from advland.core.norms import NORMS
from advland.report import figures as figs
from advland.report.data import Inputs, read_landscape, read_rows, subjects
from advland.report.figures import plt
from advland.report.stats import RHO_MIN, NotRun, Study, Verdict, decide, spearman
from advland.report.tables import eps_label, fmt

TOP, SHARE_MIN, RESIDUAL_MAX = 20, 0.75, 1e-2
CLAIM = "liu_top20"
CRITERIA = [
    f"**Liu** (the top-{TOP} eigenvalues rise with eps): per dataset, model and norm of "
    f"PGD-trained (`adv`) runs at 3 or more eps, reproduced when Spearman ρ(eps, λk) ≥ "
    f"{RHO_MIN} for at least {SHARE_MIN:.0%} of k = 1..{TOP} ({int(SHARE_MIN * TOP)} of "
    f"{TOP}). A Ritz value whose residual ‖Hv − θv‖ exceeds {RESIDUAL_MAX:.0%} of it at "
    "some eps is not converged (shown hollow below) and its k counts as not rising.",
    "Eigenvalues are of the hessian stage's objective (inputs attacked once at the final "
    "weights, `hessian` in params.yaml): exact for logistic regression, Lanczos for deep "
    "nets. The landscapes along the eigenvectors re-run the attack as the random ones do.",
]


def read_spectra(runs: pd.DataFrame, per_seed: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Long table: the run's fields, seed, rank, eigenvalue, residual, method,
    converged (residual <= RESIDUAL_MAX |eigenvalue|; exact values always), for the
    seeds that trained."""
    frames = []
    for _, r in runs.iterrows():
        seeds = set(per_seed.seed[per_seed.run_id == r.run_id])
        rows = pd.concat([read_rows(folder / f"{r.run_id}.csv", s, "hessian") for s in seeds])
        fields = r[["run_id", "family", "dataset", "model", "norm", "noise", "eps", "tag"]]
        frames.append(rows.assign(**fields.to_dict()))
    long = pd.concat(frames, ignore_index=True)
    long["converged"] = ~(long.residual > RESIDUAL_MAX * long.eigenvalue.abs())
    return long


def top_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per run and seed: fields, lam1..lamTOP and conv1..convTOP (the run's first
    TOP ranks; fewer when fewer were computed)."""
    top = long[long["rank"] <= TOP]
    keys = ["run_id", "family", "dataset", "model", "norm", "noise", "eps", "tag", "seed"]
    wide = top.pivot_table(index=keys, columns="rank", values=["eigenvalue", "converged"])
    wide.columns = [f"{'lam' if v == 'eigenvalue' else 'conv'}{k}" for v, k in wide.columns]
    return wide.reset_index()


def mean_over_seeds(wide: pd.DataFrame) -> pd.DataFrame:
    """lam: the mean over seeds; conv: converged in every seed."""
    keys = ["run_id", "family", "dataset", "model", "norm", "noise", "eps", "tag"]
    lam = [c for c in wide if c.startswith("lam")]
    conv = [c for c in wide if c.startswith("conv")]
    agg = {c: "mean" for c in lam} | {c: "min" for c in conv}
    return wide.groupby(keys, as_index=False, dropna=False).agg(agg)


def rising(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    """The Liu criterion on one subject's rows (one per eps)."""
    rhos = [spearman(rows.eps, rows[f"lam{k}"]) for k in range(1, TOP + 1)]
    conv = [bool(rows[f"conv{k}"].astype(bool).all()) for k in range(1, TOP + 1)]
    up = sum(ok and rho >= RHO_MIN for rho, ok in zip(rhos, conv, strict=True))
    numbers = {
        "rising": float(up),
        "converged": float(sum(conv)),
        "rho_1": rhos[0],
        "rho_median": float(np.nanmedian(rhos)),
        "rho_min": float(np.nanmin(rhos)),
    }
    return up >= SHARE_MIN * TOP, numbers


def describe(n: dict[str, float]) -> str:
    return (
        f"ρ ≥ {RHO_MIN} for {n['rising']:.0f} of {TOP} k ({n['converged']:.0f} converged at "
        f"every eps); ρ(eps, λ1) = {n['rho_1']:.3f}, median ρ {n['rho_median']:.3f}, "
        f"min {n['rho_min']:.3f}"
    )


def liu(mean: pd.DataFrame, wide: pd.DataFrame) -> tuple[list[Verdict], list[NotRun]]:
    """The verdict per dataset, model and norm of adv runs."""
    verdicts, not_run = [], []
    for subject, g in subjects(mean[mean.noise == "adv"]):
        if g.eps.nunique() < 3 or not {f"lam{TOP}"} <= set(g) or g[f"lam{TOP}"].isna().any():
            reason = f"needs the top {TOP} eigenvalues (hessian spectrum_k) at 3 or more eps"
            not_run.append(NotRun(CLAIM, subject, reason))
            continue
        seeds = wide[wide.run_id.isin(g.run_id)]
        verdicts.append(decide(CLAIM, subject, rising, describe, g, seeds))
    return verdicts, not_run


def rho_table(mean: pd.DataFrame) -> pd.DataFrame:
    """Spearman rho(eps, lambda_k) per k (rows) and family (columns), * where not
    converged at some eps."""
    cols = {}
    for family, g in mean.groupby("family"):
        if g.eps.nunique() < 3:
            continue
        cols[family] = [
            f"{spearman(g.eps, g[f'lam{k}']):.2f}" + ("" if g[f"conv{k}"].all() else "*")
            for k in range(1, TOP + 1)
            if f"lam{k}" in g
        ]
    n = max((len(v) for v in cols.values()), default=0)
    return pd.DataFrame(
        {"k": range(1, n + 1)} | {f: v + [""] * (n - len(v)) for f, v in cols.items()}
    )


def value_table(mean: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """Per run: a few of the top-20 values, how many converged, the largest relative
    residual."""
    rows = []
    for _, r in mean.sort_values(["family", "eps"]).iterrows():
        s = long[(long.run_id == r.run_id) & (long["rank"] <= TOP)]
        rel = (s.residual / s.eigenvalue.abs()).max()
        ks = [k for k in (1, 2, 5, 10, 20) if f"lam{k}" in r]
        conv = [c for c in r.index if c.startswith("conv")]
        rows.append(
            {"family": r.family, "eps": eps_label(r.eps, r.norm)}
            | {f"λ{k}": fmt(r, f"lam{k}") for k in ks}
            | {
                "converged": f"{int(r[conv].astype(bool).sum())} of {len(conv)}",
                "max rel. residual": "exact" if s.residual.isna().all() else f"{rel:.1e}",
            }
        )
    return pd.DataFrame(rows)


def density_figure(long: pd.DataFrame, out: Path, floor: float = 1e-10) -> Path:
    """Histogram (step lines) of log10 lambda of the exact spectra, a panel per family, a
    line per eps; eigenvalues below floor * lambda1 (numerically zero) are counted in the
    legend."""
    exact = long[long.method == "exact"]
    seed = exact.seed.min()
    fig, panels = figs.family_axes(sorted(exact.family.unique()))
    for family, ax in panels:
        g = exact[(exact.family == family) & (exact.seed == seed)]
        runs = g.drop_duplicates("run_id").sort_values("eps")
        logs = {}
        for run_id in runs.run_id:
            lam = g.eigenvalue[g.run_id == run_id].to_numpy()
            logs[run_id] = (np.log10(lam[lam > floor * lam.max()]), len(lam))
        edges = np.linspace(
            min(v.min() for v, _ in logs.values()), max(v.max() for v, _ in logs.values()), 41
        )
        colors = plt.cm.viridis(np.linspace(0, 0.95, len(runs)))
        for (_, r), color in zip(runs.iterrows(), colors, strict=True):
            v, n = logs[r.run_id]
            counts, _ = np.histogram(v, edges)
            label = f"{eps_label(r.eps, r.norm)} ({n - len(v)} ≈ 0)"
            ax.stairs(counts, edges, color=color, lw=1.1, label=label)
        ax.set(title=family, xlabel="log10 eigenvalue", ylabel="eigenvalues per bin")
        ax.set_yscale("symlog", linthresh=1)
        ax.legend(title="eps (count ≈ 0)", fontsize=6, title_fontsize=7)
    return figs.save(fig, out)


def top_figure(mean: pd.DataFrame, out: Path) -> Path:
    """lambda_k (mean over seeds) against eps, a line per k coloured by k, a panel per
    family; hollow markers: not converged."""
    fig, panels = figs.family_axes(sorted(mean.family.unique()))
    for family, ax in panels:
        g = mean[mean.family == family].sort_values("eps")
        x = g.eps * NORMS[g.norm.iloc[0]].plot_scale
        ks = [k for k in range(1, TOP + 1) if f"lam{k}" in g]
        colors = plt.cm.plasma(np.linspace(0, 0.9, len(ks)))
        for k, color in zip(ks, colors, strict=True):
            y, conv = g[f"lam{k}"], g[f"conv{k}"].astype(bool)
            ax.plot(x, y, "-", color=color, lw=0.8, label=f"λ{k}" if k in (1, 5, 10, 20) else None)
            ax.plot(x[conv], y[conv], "o", color=color, ms=3)
            ax.plot(x[~conv], y[~conv], "o", mfc="none", color=color, ms=4)
        ax.set(title=family, xlabel=figs.eps_axis(g.norm.iloc[0]), ylabel="Hessian eigenvalue")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    return figs.save(fig, out)


def eigen_figure(runs: pd.DataFrame, landscapes: Path, seed: int, out: Path) -> Path:
    """Per family, smallest, middle and largest eps: the training objective along v1
    (solid) and along the random filter-normalized direction (dashed), same colour."""
    column = "train_obj_loss"
    fig, panels = figs.family_axes(sorted(runs.family.unique()))
    for family, ax in panels:
        g = runs[runs.family == family]
        eps = figs.pick(sorted(g.eps), 3)
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(eps)))
        for e, color in zip(eps, colors, strict=True):
            r = g[g.eps == e].iloc[0]
            eig = read_landscape(landscapes / "eigen1d" / f"{r.run_id}.csv", seed)
            rnd = read_landscape(landscapes / "1d" / f"{r.run_id}.csv", seed)
            label = eps_label(r.eps, r.norm)
            ax.plot(eig.alpha, eig[column], "-", color=color, lw=1.3, label=f"{label}: v1")
            ax.plot(rnd.alpha, rnd[column], "--", color=color, lw=0.9, label=f"{label}: random")
        ax.set(title=family, xlabel="alpha (‖d‖ = norm of the filter-normalized d)")
        ax.set(ylabel=figs.OBJECTIVE, yscale="log")
        ax.legend(fontsize=6)
    return figs.save(fig, out)


def has_rows(path: Path) -> bool:
    return path.is_file() and len(pd.read_csv(path)) > 0


def study(runs: pd.DataFrame, per_seed: pd.DataFrame, inputs: Inputs) -> Study:
    """The Liu verdict, spectra, top-20 eigenvalues and eigenvector landscapes."""
    s = Study()
    doc, out = s.section, inputs.figures
    doc.h("Companion studies: Hessian spectra (Liu et al. 2020)")
    doc.p("Criteria, fixed before any number was seen:")
    doc.bullets(CRITERIA)
    long = read_spectra(runs, per_seed, inputs.spectra)
    wide = top_table(long)
    mean = mean_over_seeds(wide)
    s.verdicts, s.not_run = liu(mean, wide)
    seed = per_seed.seed.iloc[0]
    _, points, objective = figs.notes(per_seed, inputs.params["landscape"])
    if (long.method == "exact").any():
        doc.figure(
            density_figure(long, out / "spectra_density.png"),
            "The whole Hessian spectrum of logistic regression (exact, dense), a histogram of "
            f"log10 λ per eps (seed {seed}); the eigenvalues below 1e-10 λ1 (pixels that never "
            "vary, numerically zero) are counted in the legend. Look at: the bulk and the top "
            "moving right as eps grows for `adv`, less for `rand`.",
        )
    doc.figure(
        top_figure(mean, out / "spectra_top20.png"),
        f"The top-{TOP} Hessian eigenvalues against eps, a line per k ({points}); hollow: a "
        f"Ritz value not converged (residual > {RESIDUAL_MAX:.0%} of it). Look at: every line "
        "rising with eps for `adv` (Liu et al.'s Fig. 3).",
    )
    doc.table(value_table(mean, long))
    doc.p("Spearman ρ(eps, λk) per k and family (* not converged at some eps):")
    doc.table(rho_table(mean))
    for model in sorted(runs.model.unique()):
        m = runs[runs.model == model]
        first = inputs.landscapes / "eigen1d" / f"{m.run_id.iloc[0]}.csv"
        if not has_rows(first):
            continue
        doc.figure(
            eigen_figure(m, inputs.landscapes, seed, out / f"{model}_eigen_landscapes.png"),
            f"{model}: the training objective along the top Hessian eigenvector v1 (solid) "
            "and along the random filter-normalized direction (dashed), d = ‖d_random‖ v1 so "
            f"that a unit of alpha is a step of the same length ({objective}; seed {seed}). "
            "Look at: how much steeper v1 is, and whether that grows with eps.",
        )
        if has_rows(inputs.landscapes / "eigen2d" / f"{m.run_id.iloc[0]}.csv"):
            doc.figure(
                figs.landscape_2d(
                    m, inputs.landscapes, seed, out / f"{model}_eigen_2d.png", kind="eigen2d"
                ),
                f"{model} over the top-2 eigenvectors (alpha along v1, beta along v2, same "
                "scaling), smallest, middle and largest eps of each family; compare with the "
                "random directions' 2-D figure above.",
            )
    return s
