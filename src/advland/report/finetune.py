"""Adversarial fine-tuning (Xu, Yap & Prabhu 2019): the accuracy matrix (their Table 1),
1 - SSIM (their Table 2), sharpness and 2D / 3D landscapes of the clean model and of each
fine-tuned one (advland.studies.finetune; metrics/finetune/eval.json, landscapes/finetune/).

The criteria are fixed here, before any number is seen:
- finetune_sharper: per attack, the fine-tuned model's lambda1 exceeds the clean model's
  (ratio > 1);
- finetune_order: lambda1(fgsm) > lambda1(pgd) > lambda1(stadv), the paper's ordering
  (judged only when all three attacks ran);
- finetune_ssim: Spearman rho(mean 1 - SSIM of the attack, lambda1 of the model fine-tuned
  on it) >= RHO_MIN over the attacks (at least three).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from advland.metrics import read_metrics
from advland.metrics.finetune import CLEAN, FinetuneEvalMetrics
from advland.report import figures as figs
from advland.report.data import Inputs, read_landscape
from advland.report.stats import CLAIMS, RHO_MIN, NotRun, Study, decide, spearman

ORDER = ("fgsm", "pgd", "stadv")  # the paper's sharpness ordering, sharpest first
PAPER_KEY = "xu2019"
CRITERIA = [
    "**Fine-tuning sharpens**: per attack, λ1 of the model fine-tuned on it > λ1 of the "
    "clean model.",
    "**Ordering**: λ1(FGSM) > λ1(PGD) > λ1(stAdv), the paper's ordering.",
    f"**1 − SSIM tracks sharpness**: Spearman ρ(mean 1 − SSIM of an attack, λ1 of the model "
    f"fine-tuned on it) ≥ {RHO_MIN} over the attacks (the paper's values give ρ = 1).",
    "λ1 and the landscapes are of the clean training loss on the same first training images "
    "for every model (so that the four models are measured on one function); λ1 by Lanczos "
    "(residual in the table).",
]


def frames(metrics: dict, attacks: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean, per seed): one row per model with lambda1 and its attack's 1 - SSIM."""

    def rows(values: dict) -> list[dict]:
        return [
            {
                "model": m,
                "lambda1": values.get(f"lambda1_{m}", np.nan),
                "ssim_loss": values.get(f"ssim_loss_{m}", np.nan),
            }
            for m in [CLEAN, *attacks]
        ]

    mean = pd.DataFrame(rows(metrics["mean"]))
    seeds = [pd.DataFrame(rows(v)).assign(seed=int(s)) for s, v in metrics["seeds"].items()]
    return mean, pd.concat(seeds, ignore_index=True)


def lam(rows: pd.DataFrame, model: str) -> float:
    return float(rows.set_index("model").lambda1[model])


def sharper(attack: str):
    def check(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
        ratio = lam(rows, attack) / lam(rows, CLEAN)
        return ratio > 1, {"ratio": ratio}

    return check


def ordered(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    values = [lam(rows, a) for a in ORDER]
    ok = all(a > b for a, b in zip(values, values[1:], strict=False))
    return ok, {f"lambda1_{a}": v for a, v in zip(ORDER, values, strict=True)}


def tracks_ssim(rows: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    ft = rows[rows.model != CLEAN]
    rho = spearman(ft.ssim_loss, ft.lambda1)
    return rho >= RHO_MIN, {"rho": rho}


def verdicts(s: Study, mean: pd.DataFrame, seeds: pd.DataFrame, attacks: list[str]) -> None:
    for a in attacks:
        s.verdicts.append(
            decide(
                "finetune_sharper",
                a,
                sharper(a),
                lambda n: f"λ1 {n['ratio']:.2f} × the clean model's",
                mean,
                seeds,
            )
        )
    if set(ORDER) <= set(attacks):
        s.verdicts.append(
            decide(
                "finetune_order",
                " > ".join(ORDER),
                ordered,
                lambda n: ", ".join(f"{k[8:]} {v:.4g}" for k, v in n.items()),
                mean,
                seeds,
            )
        )
    else:
        s.not_run.append(NotRun("finetune_order", "fgsm > pgd > stadv", "needs all three"))
    if len(attacks) >= 3:
        s.verdicts.append(
            decide(
                "finetune_ssim",
                "attacks",
                tracks_ssim,
                lambda n: f"ρ(1 − SSIM, λ1) = {n['rho']:.2f}",
                mean,
                seeds,
            )
        )
    else:
        s.not_run.append(NotRun("finetune_ssim", "attacks", "needs three or more attacks"))


def accuracy_table(mean: dict, attacks: list[str], paper: dict) -> pd.DataFrame:
    """Table 1: accuracy (%) of each model (rows) on clean and attacked test images, with
    the paper's CIFAR-10 value after a slash where it has one."""
    cols = [CLEAN, *attacks]
    rows = []
    for m in cols:
        row = {"fine-tuned on": "none (clean model)" if m == CLEAN else m}
        for a in cols:
            ref = paper.get("accuracy", {}).get(m, {}).get(a)
            ours = f"{mean[f'acc_{m}_{a}']:.2f}"
            row[a] = ours + (f" / {ref:.2f}†" if ref is not None else "")
        rows.append(row)
    return pd.DataFrame(rows)


def ssim_table(mean: dict, attacks: list[str], paper: dict) -> pd.DataFrame:
    ref = paper.get("ssim_loss", {})
    return pd.DataFrame(
        [
            {
                "attack": a,
                "1 − SSIM (ours)": f"{mean[f'ssim_loss_{a}']:.4f}",
                "paper† (CIFAR-10)": f"{ref[a]:.3f}" if a in ref else "",
            }
            for a in attacks
        ]
    )


def sharpness_table(mean: dict, models: list[str]) -> pd.DataFrame:
    keys = ("lambda1", "lambda2", "lambda3", "trace", "max_rel_residual", "curvature_1d")
    return pd.DataFrame(
        [{"model": m} | {k: mean.get(f"{k}_{m}", np.nan) for k in keys} for m in models]
    )


def surfaces(inputs: Inputs, seed: int, models: list[str]) -> dict[str, pd.DataFrame]:
    """model -> the 2D grid of the clean training loss (rows beta, columns alpha)."""
    s = read_landscape(inputs.landscapes / "finetune" / "2d.csv", seed)
    return {
        m: s[s.model == m].pivot(index="beta", columns="alpha", values="train_clean_loss")
        for m in models
    }


def contour_figure(grids: dict[str, pd.DataFrame], out):
    """2D filled contours, one panel per model, one log colour scale and the same axes."""
    values = np.concatenate([z.to_numpy().ravel() for z in grids.values()])
    norm = LogNorm(values.min(), max(values.max(), values.min() * 1.01))
    levels = np.geomspace(norm.vmin, norm.vmax, 16)
    fig, axes = plt.subplots(
        1, len(grids), figsize=(2.7 * len(grids) + 0.8, 2.7), squeeze=False, layout="constrained"
    )
    for ax, (m, z) in zip(axes[0], grids.items(), strict=True):
        filled = ax.contourf(z.columns, z.index, z.to_numpy(), levels=levels, norm=norm)
        ax.plot(0, 0, "w+", ms=6)
        ax.set(title=m, xlabel="alpha (filter-normalized)", aspect="equal")
        ax.grid(False)
    axes[0, 0].set_ylabel("beta (filter-normalized)")
    fig.colorbar(filled, ax=axes, label="clean training loss, log scale", format="%.3g")
    return figs.save(fig, out)


def surface_figure(grids: dict[str, pd.DataFrame], out):
    """3D surfaces (mplot3d), one panel per model, the same z range and colour scale."""
    values = np.concatenate([z.to_numpy().ravel() for z in grids.values()])
    fig = plt.figure(figsize=(3.2 * len(grids), 3.6), layout="constrained")
    for i, (m, z) in enumerate(grids.items()):
        ax = fig.add_subplot(1, len(grids), i + 1, projection="3d")
        a, b = np.meshgrid(z.columns.to_numpy(), z.index.to_numpy())
        ax.plot_surface(
            a, b, z.to_numpy(), cmap="viridis", vmin=values.min(), vmax=values.max(), lw=0
        )
        ax.set(title=m, xlabel="alpha", ylabel="beta", zlim=(values.min(), values.max()))
        ax.set_zlabel("clean train loss")
    return figs.save(fig, out)


def study(runs: pd.DataFrame, per_seed: pd.DataFrame, inputs: Inputs) -> Study:
    """The fine-tuning study's tables, figures and verdicts (not run without `finetune`)."""
    s = Study()
    doc = s.section
    cfg = inputs.params.get("finetune")
    if cfg is None or inputs.metrics is None or cfg["source"] not in set(runs.run_id):
        reason = "no finetune section, or its clean model is not among the runs"
        s.not_run.append(NotRun("finetune_sharper", "fine-tuning", reason))
        return s
    attacks = list(cfg["attacks"])
    path = inputs.metrics / "finetune" / "eval.json"
    metrics = read_metrics(path, FinetuneEvalMetrics, {"attacks": attacks}).model_dump()
    paper = inputs.paper.get(PAPER_KEY, {})
    mean_rows, seed_rows = frames(metrics, attacks)
    verdicts(s, mean_rows, seed_rows, attacks)
    mean = metrics["mean"]
    n = metrics["n_seeds"]
    doc.h("Adversarial fine-tuning (Xu, Yap & Prabhu 2019)")
    doc.p(
        f"The clean model `{cfg['source']}` fine-tuned for {cfg['train']['epochs']} epochs on "
        f"its first {cfg['n_train']} training images plus one adversarial copy of each, made "
        "once against the clean model (README, Adversarial fine-tuning); "
        f"{n} seed{'s' * (n > 1)}, means shown. Criteria, fixed before any number was seen:"
    )
    doc.bullets(CRITERIA)
    for word, group in (("Reproduced", True), ("Not reproduced", False)):
        hits = [f"{CLAIMS[v.claim]} ({v.subject}: {v.detail})" for v in s.verdicts
                if v.reproduced == group]  # fmt: skip
        doc.p(f"**{word}**: " + ("; ".join(hits) if hits else "none") + ".")
    doc.h("Table 1 analogue: accuracy (%) on the first test images", 4)
    doc.table(accuracy_table(mean, attacks, paper))
    doc.p(
        "Rows: the model; columns: clean test images and each attack run against that model. "
        f"† After the slash: {paper.get('source', 'the paper')} — a different model on a "
        "different dataset, for reference only."
    )
    doc.h("Table 2 analogue: mean 1 − SSIM of test images and their adversarial versions", 4)
    doc.table(ssim_table(mean, attacks, paper))
    doc.h("Sharpness of the clean training loss", 4)
    doc.table(sharpness_table(mean, [CLEAN, *attacks]))
    seed = int(next(iter(metrics["seeds"])))
    grids = surfaces(inputs, seed, [CLEAN, *attacks])
    out = inputs.figures
    doc.figure(
        contour_figure(grids, out / "finetune_contours.png"),
        f"Filled contours of the clean training loss over two filter-normalized directions "
        f"around each model's weights (+), seed {seed}, one log colour scale. Look at: the "
        "innermost contour shrinking for a sharper model.",
    )
    doc.figure(
        surface_figure(grids, out / "finetune_surfaces.png"),
        f"The same grids as 3D surfaces, seed {seed}, one z range and colour scale.",
    )
    return s
