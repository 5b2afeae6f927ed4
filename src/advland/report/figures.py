"""Figures: 1D landscapes (the paper's Figs. 2 and 4), top eigenvalues against eps
(Fig. 3), 2D landscapes as filled contours and training curves. One panel per family.

Axes carry units: eps in 1/255 for Linf, alpha and beta in filter-normalized units
(a step of 1 moves every filter by its own norm; for logistic regression ||d|| = ||w||).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from advland.core.io import atomic_outputs  # noqa: E402
from advland.core.norms import NORMS  # noqa: E402
from advland.report.data import read_landscape, read_training_log  # noqa: E402
from advland.report.stats import linear_fit  # noqa: E402
from advland.report.tables import eps_label  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
OBJECTIVE = "training objective (mean loss)"
COLUMNS = 4  # panels per row


def save(fig, out: Path) -> Path:
    with atomic_outputs(out) as (tmp,):
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def family_axes(families: list[str], width: float = 3.3, height: float = 2.9):
    """A grid of panels, COLUMNS per row; the spare ones are hidden."""
    n = max(1, len(families))
    rows, cols = math.ceil(n / COLUMNS), min(n, COLUMNS)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(zip(families, axes.flat, strict=False))


def eps_axis(norm: str) -> str:
    return "eps" + NORMS[norm].plot_unit


def notes(per_seed: pd.DataFrame, landscape: dict) -> tuple[str, str, str]:
    """What the figures show: the seed of the curves, the points, the objective
    (`landscape` is params.yaml's section, per dataset and model)."""
    pairs = per_seed[["dataset", "model"]].drop_duplicates().itertuples(index=False)
    modes = {landscape[d][m]["attack"] for d, m in pairs}
    seeds = list(dict.fromkeys(per_seed.seed))
    curves = (
        f"seed {seeds[0]}"
        if len(seeds) == 1
        else f"curves of the first seed ({seeds[0]}) of {len(seeds)}"
    )
    points = "one seed" if len(seeds) == 1 else f"means over {len(seeds)} seeds, bars 95% CIs"
    objective = (
        "PGD re-run at every point for `adv` runs, one fixed noise draw for `rand` runs"
        if modes == {"rerun"}
        else "inputs perturbed once at the trained weights and then held fixed"
        if modes == {"fixed"}
        else "the attack re-run or held fixed per model, as `landscape` in params.yaml says"
    )
    return curves, points, objective


def curves_per_eps(
    runs: pd.DataFrame, read: Callable[[str], pd.DataFrame], x: str, y: str, xlabel: str, out: Path
) -> Path:
    """A panel per family, a curve of column y against x per eps (log y); `read` gives
    a run id's rows."""
    fig, panels = family_axes(sorted(runs.family.unique()))
    for family, ax in panels:
        g = runs[runs.family == family].sort_values("eps")
        colors = plt.cm.viridis(np.linspace(0, 0.95, len(g)))
        for (_, r), color in zip(g.iterrows(), colors, strict=True):
            rows = read(r.run_id)
            ax.plot(rows[x], rows[y], color=color, lw=1.2, label=eps_label(r.eps, r.norm))
        ax.set(title=family, xlabel=xlabel, ylabel=OBJECTIVE)
        ax.set_yscale("log")
        ax.legend(title="eps", fontsize=6, title_fontsize=7)
    return save(fig, out)


def landscape_1d(
    runs: pd.DataFrame, landscapes: Path, seed: int, out: Path, column: str = "train_obj_loss"
) -> Path:
    """The training objective along one filter-normalized direction, a curve per eps."""
    return curves_per_eps(
        runs,
        lambda run_id: read_landscape(landscapes / "1d" / f"{run_id}.csv", seed),
        "alpha",
        column,
        "alpha (filter-normalized units)",
        out,
    )


def training_curves(runs: pd.DataFrame, logs: Path, seed: int, out: Path) -> Path:
    """The training objective of every epoch (the mean over its batches), a curve per eps."""
    return curves_per_eps(
        runs,
        lambda run_id: read_training_log(logs / f"{run_id}.csv", seed),
        "epoch",
        "train_loss",
        "epoch",
        out,
    )


def eigenvalues(runs: pd.DataFrame, out: Path, prefix: str = "lambda") -> Path:
    """Top-3 eigenvalues (mean over seeds, bars: 95% CI) against eps, with each
    one's least-squares line and R^2 where there are 3 or more eps."""
    fig, panels = family_axes(sorted(runs.family.unique()))
    for family, ax in panels:
        g = runs[runs.family == family].sort_values("eps")
        norm = g.norm.iloc[0]
        x = g.eps * NORMS[norm].plot_scale
        for k, marker in zip((1, 2, 3), "osd", strict=True):
            col = f"{prefix}{k}"
            if col not in g or g[col].isna().any():
                continue
            fit = linear_fit(x, g[col]) if x.nunique() >= 3 else None
            label = f"$\\lambda_{k}$" + (f" (R²={fit[2]:.2f})" if fit else "")
            yerr = g.get(f"{col}_ci95")
            bars = ax.errorbar(x, g[col], yerr=yerr, fmt=marker, ms=4, capsize=2, label=label)
            if fit:
                ax.plot(x, fit[0] * x + fit[1], "-", color=bars[0].get_color(), lw=0.8)
        scaled = " × ‖w‖²" if prefix.startswith("scaled") else ""
        ax.set(title=family, xlabel=eps_axis(norm), ylabel=f"Hessian eigenvalue{scaled}")
        ax.legend(fontsize=6)
    return save(fig, out)


def pick(values: list[float], n: int) -> list[float]:
    """n values spread evenly over a sorted list, first and last included."""
    idx = np.linspace(0, len(values) - 1, min(n, len(values))).round().astype(int)
    return [values[i] for i in sorted(set(idx))]


def landscape_2d(
    runs: pd.DataFrame,
    landscapes: Path,
    seed: int,
    out: Path,
    n_eps: int = 3,
    column: str = "train_obj_loss",
    kind: str = "2d",
) -> Path:
    """Filled contours of the training objective over two filter-normalized directions
    (or, kind "eigen2d", the top-2 Hessian eigenvectors): a row per family, a panel per
    eps (smallest, middle, largest), one log colour scale."""
    families = sorted(runs.family.unique())
    n_eps = min(n_eps, runs.groupby("family").eps.nunique().max())
    grids: dict[str, list] = {}
    for family in families:
        g = runs[runs.family == family]
        for eps in pick(sorted(g.eps), n_eps):
            r = g[g.eps == eps].iloc[0]
            s = read_landscape(landscapes / kind / f"{r.run_id}.csv", seed)
            z = s.pivot(index="beta", columns="alpha", values=column)
            grids.setdefault(family, []).append((r, z))
    values = np.concatenate([z.to_numpy().ravel() for g in grids.values() for _, z in g])
    positive = values[values > 0]
    norm = LogNorm(positive.min(), max(positive.max(), positive.min() * 1.01))
    levels = np.geomspace(norm.vmin, norm.vmax, 16)
    fig, axes = plt.subplots(
        len(families),
        n_eps,
        figsize=(2.7 * n_eps + 0.8, 2.5 * len(families)),
        squeeze=False,
        layout="constrained",
    )
    for i, family in enumerate(families):
        for j, (r, z) in enumerate(grids[family]):
            ax = axes[i, j]
            zz = np.clip(z.to_numpy(), norm.vmin, norm.vmax)
            filled = ax.contourf(z.columns, z.index, zz, levels=levels, norm=norm, cmap="viridis")
            ax.plot(0, 0, "w+", ms=6)
            ax.set_aspect("equal")
            if i == len(families) - 1:
                ax.set_xlabel("alpha (filter-normalized units)")
            if j == 0:
                ax.set_ylabel("beta (filter-normalized units)")
            ax.set_title(f"{family}, eps {eps_label(r.eps, r.norm)}", fontsize=7)
            ax.grid(False)
        for ax in axes[i, len(grids[family]) :]:
            ax.set_visible(False)
    label = f"{OBJECTIVE}, log scale"
    fig.colorbar(filled, ax=axes, label=label, shrink=0.8, ticks=levels[::3], format="%.3g")
    return save(fig, out)
