"""Companion studies: Liu et al. (2020) and Kanai et al. (2021) on linear models.

Reads the collapse, smoothness and toy stages' outputs (companion/ and
metrics/companion/). The criteria are fixed here, before any number is seen:
- Liu, collapse to w = 0: per norm and box setting, a collapse was found, the
  collapsed models predict the majority class only (clean accuracy within MAJORITY_TOL
  points of it), and the measured collapse eps is within COLLAPSE_TOL (relative) of the
  exact prediction, or, where the prediction is a lower bound (L2 with the box), at
  least (1 - COLLAPSE_TOL) times it.
- Kanai, L2 smoother than Linf: the gradient's Lipschitz ratio R(r) (median over
  directions) settles for L2 (R(smallest r) / R(1e-3) within [1/SETTLE_FACTOR,
  SETTLE_FACTOR] at the trained point and across a sign change) and does not for Linf
  across a sign change (that ratio >= GROWTH_MIN; R ~ 1/r would give 1e-3 / r).
- Kanai, EntropySGD smooths: on every toy model, across each axis, the Linf loss's
  gradient jumps by >= JUMP_MIN, and no smoothed surface's gradient jumps by more than
  SMOOTH_MAX (between points 2h apart).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from advland.core.errors import DataError
from advland.metrics import read_metrics
from advland.metrics.collapse import CollapseMetrics
from advland.metrics.smoothness import SmoothnessMetrics
from advland.metrics.toy import ToyMetrics
from advland.report.data import Inputs
from advland.report.figures import plt, save
from advland.report.stats import NotRun, Study, Verdict

COLLAPSE_TOL, MAJORITY_TOL = 0.10, 0.5
SETTLE_FACTOR, GROWTH_MIN = 2.0, 100.0
JUMP_MIN, SMOOTH_MAX = 0.1, 0.01
CASES = {"linf_nobox": "Linf, no box", "linf_box": "Linf, [0,1] box",
         "l2_nobox": "L2, no box", "l2_box": "L2, [0,1] box"}  # fmt: skip
CRITERIA = [
    f"**Liu: collapse to w = 0**: per norm and box setting, a collapse (‖w‖₂ ≤ w_tol) was "
    f"found, the collapsed models' clean accuracy is the majority class's (within {MAJORITY_TOL} "
    f"points), and the measured collapse eps is within {COLLAPSE_TOL:.0%} of the exact "
    f"prediction ‖μ₊ − μ₋‖/2 (box: per-pixel bisection), or ≥ {1 - COLLAPSE_TOL:.0%} of it "
    "where the prediction is only a lower bound (L2 with the box).",
    f"**Kanai: L2 is smoother than Linf**: R(r) = ‖∇L(w + ru) − ∇L(w)‖/r, median over random "
    f"unit u, settles for L2 (R(10⁻⁶)/R(10⁻³) within ×{SETTLE_FACTOR:g} both at the trained "
    f"weights and across a sign change of one weight) and grows for Linf across a sign change "
    f"(R(10⁻⁶)/R(10⁻³) ≥ {GROWTH_MIN:g}; a jump gives ~1000).",
    f"**Kanai: EntropySGD smooths the toy losses**: on the linear and the swish toy, across "
    f"each axis, the Linf loss's gradient jumps by ≥ {JUMP_MIN:g} while no smoothed "
    f"surface's gradient jumps by more than {SMOOTH_MAX:g}.",
]


def verdict(claim: str, subject: str, ok: bool, numbers: dict, detail: str) -> Verdict:
    """One seed: the companion stages train and measure with seeds[0] only."""
    return Verdict(claim, subject, bool(ok), numbers, detail, 1, 1)


def number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def collapse_ok(case: dict, rows: pd.DataFrame) -> bool:
    measured, predicted = number(case["measured"]), case["predicted"]
    if not math.isfinite(measured):
        return False
    majority = (rows[rows.collapsed].clean_acc - case["majority_acc"]).abs().max() <= MAJORITY_TOL
    close = measured / predicted - 1
    near = abs(close) <= COLLAPSE_TOL if case["exact"] else close >= -COLLAPSE_TOL
    return bool(majority and near)


def collapse_figure(table: pd.DataFrame, summary: dict, out: Path) -> Path:
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), layout="constrained")
    for ax, (case, title) in zip(axes, CASES.items(), strict=True):
        norm, box = case.split("_")
        g = table[(table.norm == norm) & (table.box == (box == "box"))].sort_values("eps")
        ax.semilogy(g.eps, g.w_norm.clip(lower=1e-6), "o-", label="‖w‖₂")
        ax.axvline(
            summary[case]["predicted"],
            color="k",
            ls="--",
            label="predicted" + ("" if summary[case]["exact"] else " (lower bound)"),
        )
        ax.set(title=title, xlabel="eps", ylabel="‖w‖₂")
        twin = ax.twinx()
        twin.plot(g.eps, g.robust_acc, "s:", color="tab:red", label="robust acc (%)")
        twin.set_ylim(40, 101)
        twin.set_ylabel("robust train acc (%)", color="tab:red")
        ax.legend(loc="lower left", fontsize=7)
    return save(fig, out)


def liu(s: Study, dataset: str, inputs: Inputs) -> None:
    path = inputs.metrics / "companion" / "collapse" / f"{dataset}.json"
    summary = read_metrics(path, CollapseMetrics).model_dump()
    table = read_csv(inputs.companion / "collapse" / f"{dataset}.csv")
    rows = []
    for case, title in CASES.items():
        c = summary[case]
        norm, box = case.split("_")
        g = table[(table.norm == norm) & (table.box == (box == "box"))]
        ok = collapse_ok(c, g)
        measured, kept = number(c["measured"]), number(c["bracket_lo"])
        rel = measured / c["predicted"] - 1
        found = (
            f"measured {measured:.4f} ({rel:+.1%}; bracket ({kept:.4f}, {measured:.4f}])"
            if math.isfinite(measured)
            else f"no collapse up to eps {g.eps.max():.4f}"
        )
        detail = f"predicted {c['predicted']:.4f}{'' if c['exact'] else ' (lower bound)'}, {found}"
        s.verdicts.append(
            verdict(
                "liu_collapse",
                f"{dataset}: {title}",
                ok,
                {"predicted": c["predicted"], "measured": measured},
                detail,
            )
        )
        rows.append(
            {
                "case": title,
                "predicted eps": c["predicted"],
                "prediction": "exact" if c["exact"] else "lower bound",
                "measured eps": measured,
                "largest eps that kept w": kept,
                "relative difference": f"{rel:+.1%}",
                "verdict": s.verdicts[-1].word,
            }
        )
    doc = s.section
    doc.h(f"Liu et al.: collapse to w = 0 ({dataset})", 3)
    doc.table(pd.DataFrame(rows))
    doc.p(
        "Measured: the smallest eps whose trained ‖w‖₂ fell to w_tol or less, after a grid "
        "of factors × the prediction and a few halvings of the bracket. Just above an exact "
        "threshold the subgradient that pulls w to 0 is proportional to eps − eps*, so SGD "
        "reaches w = 0 slowly there: the measured value errs upwards by up to a bracket."
    )
    doc.figure(
        collapse_figure(table, summary, inputs.figures / f"companion_collapse_{dataset}.png"),
        f"{dataset}, logistic regression trained on the exact worst case (PGD for L2 with the "
        "box): ‖w‖₂ (log scale, blue) and robust training accuracy (red) against eps, the "
        "predicted collapse eps dashed. Look at: ‖w‖ dropping to ~0 and accuracy to the "
        f"majority class ({summary['linf_nobox']['majority_acc']:.1f}%) at the dashed line.",
    )


def smoothness_figure(table: pd.DataFrame, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained", sharey=True)
    for ax, point in zip(axes, ("trained", "sign_change"), strict=True):
        for name, g in table[table.point == point].groupby("objective", sort=False):
            med = g.groupby("radius").ratio.median()
            ax.loglog(med.index, med.values, "o-", label=name)
        ax.set(
            title=point.replace("_", " "),
            xlabel="radius r = ‖δ‖",
            ylabel="median ‖∇L(w+δ) − ∇L(w)‖ / ‖δ‖",
        )
        ax.legend(fontsize=8)
    return save(fig, out)


def kanai_smooth(s: Study, dataset: str, inputs: Inputs) -> None:
    path = inputs.metrics / "companion" / "smoothness" / f"{dataset}.json"
    summary = read_metrics(path, SmoothnessMetrics).model_dump()
    table = read_csv(inputs.companion / "smoothness" / f"{dataset}.csv")
    l2 = [summary["l2"][p]["growth"] for p in ("trained", "sign_change")]
    linf = summary["linf"]["sign_change"]["growth"]
    ok = all(1 / SETTLE_FACTOR <= g <= SETTLE_FACTOR for g in l2) and linf >= GROWTH_MIN
    detail = (
        f"R(1e-6)/R(1e-3): L2 {l2[0]:.3f} (trained), {l2[1]:.3f} (sign change); "
        f"Linf {summary['linf']['trained']['growth']:.3g} (trained), {linf:.3g} "
        "(sign change)"
    )
    s.verdicts.append(
        verdict(
            "kanai_smoothness",
            dataset,
            ok,
            {"l2_growth": max(l2, key=lambda g: abs(math.log(g))), "linf_growth": linf},
            detail,
        )
    )
    doc = s.section
    doc.h(f"Kanai et al.: smoothness of the adversarial loss ({dataset})", 3)
    doc.table(
        pd.DataFrame(
            [
                {
                    "objective": name,
                    "point": point.replace("_", " "),
                    "R(smallest r)": v["ratio_smallest"],
                    "R(1e-3)": v["ratio_settle"],
                    "growth": v["growth"],
                }
                for name, points in summary.items()
                if isinstance(points, dict)
                for point, v in points.items()
            ]
        )
    )
    doc.figure(
        smoothness_figure(table, inputs.figures / f"companion_smoothness_{dataset}.png"),
        f"{dataset}: the gradient's local Lipschitz ratio against the step radius (float64, "
        "median over random directions), at the trained weights (left) and with one weight "
        "moved to +1e-12 and every step crossing zero (right). Look at: flat lines for the "
        "standard and L2 objectives (smooth), slope −1 for Linf (a gradient jump; at the "
        "trained weights too, where random steps flip the signs of the smallest weights).",
    )


def toy_figure(toy: pd.DataFrame, column: str, out: Path, title: str) -> Path:
    models, losses = ["linear", "swish"], ["standard", "l2", "linf"]
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.4), layout="constrained")
    for i, model in enumerate(models):
        for j, loss in enumerate(losses):
            g = toy[(toy.model == model) & (toy.loss == loss)]
            n = int(round(math.sqrt(len(g))))
            grid = g[column].to_numpy().reshape(n, n)
            w1, w2 = g.w1.to_numpy().reshape(n, n), g.w2.to_numpy().reshape(n, n)
            cs = axes[i, j].contourf(w1, w2, grid, levels=20, cmap="viridis")
            axes[i, j].contour(w1, w2, grid, levels=10, colors="w", linewidths=0.4)
            axes[i, j].set(title=f"{model}, {loss}", xlabel="w1", ylabel="w2")
            fig.colorbar(cs, ax=axes[i, j])
    fig.suptitle(title)
    return save(fig, out)


def kanai_entropy(s: Study, inputs: Inputs) -> None:
    checks = read_metrics(inputs.metrics / "companion" / "toy.json", ToyMetrics).model_dump()
    jumps = pd.DataFrame(checks["jumps"])
    linf = jumps[jumps.loss == "linf"]
    ok = bool((linf.jump_loss >= JUMP_MIN).all() and (jumps.jump_smoothed <= SMOOTH_MAX).all())
    detail = (
        f"Linf gradient jump across the axes {linf.jump_loss.min():.3g} to "
        f"{linf.jump_loss.max():.3g}; largest smoothed jump {jumps.jump_smoothed.max():.2g}"
    )
    s.verdicts.append(
        verdict(
            "kanai_entropy",
            "toy surfaces",
            ok,
            {
                "linf_jump_min": float(linf.jump_loss.min()),
                "smoothed_jump_max": float(jumps.jump_smoothed.max()),
            },
            detail,
        )
    )
    toy = read_csv(inputs.companion / "toy.csv")
    doc = s.section
    doc.h("Kanai et al.: toy surfaces and EntropySGD", 3)
    doc.p(
        f"One point, eps = {checks['eps']:g}, EntropySGD coupling γ = {checks['gamma']:g}; "
        f"gradient jumps between (h, 1) and (−h, 1), and (1, h) and (1, −h), h = {checks['h']:g}:"
    )
    doc.table(jumps)
    pgd = pd.DataFrame(checks["pgd"])
    worst = pgd.loc[pgd.share_short.idxmax()]
    doc.p(
        "The surfaces use the exact worst case (closed form for the linear model, the exact "
        "interval maximum for the swish unit). PGD from x (no random start, "
        f"{inputs.params['companion']['toy']['pgd']['steps']} steps) beside it falls short "
        f"by more than 1e-3 on {worst.share_short:.0%} of the grid for the {worst.model} "
        f"{worst.loss} loss (by up to {worst.max_shortfall:.3g}): it climbs to the nearer "
        "end of the logit's interval, a local maximum of the non-monotone swish."
    )
    doc.table(pgd)
    doc.figure(
        toy_figure(
            toy, "L", inputs.figures / "companion_toy.png", "loss L(w) (Kanai et al. Figs. 2, 4)"
        ),
        "Toy loss surfaces over the 2-D weight: linear model and one swish unit, standard, "
        "L2- and Linf-adversarial, each at the exact worst case. Look at: the Linf contours' "
        "corners on the axes, the L2 contours' round shape.",
    )
    doc.figure(
        toy_figure(
            toy,
            "F",
            inputs.figures / "companion_toy_smoothed.png",
            "EntropySGD local entropy F(w) (Kanai et al. Fig. 5)",
        ),
        "The same surfaces smoothed by EntropySGD's local entropy (quadrature on the "
        "grid, truncated to it: trust F a few 1/√γ inside the edges). Look at: the "
        "corners gone.",
    )


def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the table ({err}); run its stage") from None


def study(runs: pd.DataFrame, per_seed: pd.DataFrame, inputs: Inputs) -> Study:
    """Liu's collapse, Kanai's smoothness and toy surfaces, from the companion stages."""
    s = Study()
    doc = s.section
    doc.h("Companion studies (Liu et al. 2020, Kanai et al. 2021)")
    doc.p("Criteria, fixed before any number was seen:")
    doc.bullets(CRITERIA)
    if inputs.companion is None:
        s.not_run = [
            NotRun(c, "all", "no companion outputs given to the report")
            for c in ("liu_collapse", "kanai_smoothness", "kanai_entropy")
        ]
        return s
    datasets = list(inputs.params["companion"]["linear"])
    if not datasets:
        reason = "companion.linear is empty in params.yaml (no logistic regression)"
        s.not_run = [NotRun(c, "linear", reason) for c in ("liu_collapse", "kanai_smoothness")]
    for dataset in datasets:
        liu(s, dataset, inputs)
        kanai_smooth(s, dataset, inputs)
    kanai_entropy(s, inputs)
    return s
