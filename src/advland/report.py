"""The report: tables beside the paper's values, figures, and a verdict per claim.

Everything is computed from the pipeline's metrics; the criteria are fixed here,
before any number is seen, and stated in the report:
- Claim 1 (adversarial training sharpens): for each norm's adversarial family,
  reproduced when Spearman rho(eps, lambda1) >= 0.8 and the fitted slope is > 0.
  The R^2 of a linear fit says how close to linear the growth is.
- Claim 2 (random noise sharpens much less): at every eps > 0 present in both
  families, ratio(eps) = lambda1_adv / lambda1_rand > 1, and at the largest such
  eps the ratio is >= 2.
- Claim 3 (ResNet18: sharper and a larger robust gap with eps): Spearman rho of
  both lambda1 and the robust gap with eps >= 0.8, per dataset.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from advland.config import RunSpec  # noqa: E402
from advland.io import atomic_outputs, write_csv  # noqa: E402

STAGES = ("train", "evaluate", "hessian", "landscape")
RHO_MIN, RATIO_MIN = 0.8, 2.0
plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})


# ---- data --------------------------------------------------------------------------


def collect(metrics_dir: Path, run_ids: list[str]) -> pd.DataFrame:
    """One tidy row per run: its spec plus every stage's metrics (`<stage>_seconds`)."""
    rows = []
    for run_id in run_ids:
        spec = RunSpec.parse(run_id)
        row = {
            "run_id": run_id,
            "family": spec.family,
            "dataset": spec.dataset,
            "model": spec.model,
            "norm": spec.norm,
            "noise": spec.noise,
            "eps": spec.eps,
        }
        for stage in STAGES:
            path = metrics_dir / stage / f"{run_id}.json"
            if path.is_file():
                metrics = json.loads(path.read_text())
                metrics[f"{stage}_seconds"] = metrics.pop("seconds", np.nan)
                row |= {k: v for k, v in metrics.items() if k not in row}
        rows.append(row)
    return pd.DataFrame(rows)


def eps_label(eps: float, norm: str) -> str:
    return f"{eps * 255:g}/255" if norm == "linf" else f"{eps:g}"


# ---- statistics and verdicts -------------------------------------------------------


def spearman(x, y) -> float:
    """Pearson correlation of the ranks (ties get their mean rank)."""
    x, y = pd.Series(np.asarray(x, float)).rank(), pd.Series(np.asarray(y, float)).rank()
    return float(x.corr(y)) if len(x) > 1 and x.std() > 0 and y.std() > 0 else float("nan")


def linear_fit(x, y) -> tuple[float, float, float]:
    """Slope, intercept and R^2 of the least-squares line y = a x + b."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    return (
        float(slope),
        float(intercept),
        float(1 - (resid**2).sum() / total) if total > 0 else float("nan"),
    )


@dataclass
class Verdict:
    claim: str
    subject: str
    reproduced: bool
    evidence: str
    numbers: dict = field(default_factory=dict)

    @property
    def word(self) -> str:
        return "reproduced" if self.reproduced else "not reproduced"


def claim1(runs: pd.DataFrame, column: str = "lambda1") -> list[Verdict]:
    out = []
    for family, g in runs[runs.noise == "adv"].groupby("family"):
        g = g.sort_values("eps")
        if len(g) < 3 or column not in g:
            continue
        rho = spearman(g.eps, g[column])
        slope, _, r2 = linear_fit(g.eps, g[column])
        ok = rho >= RHO_MIN and slope > 0
        out.append(
            Verdict(
                "1",
                family,
                ok,
                f"Spearman rho(eps, {column}) = {rho:.3f} (needs >= {RHO_MIN}), "
                f"slope {slope:.4g}, linear-fit R^2 = {r2:.3f}",
                {"rho": rho, "slope": slope, "r2": r2},
            )
        )
    return out


def claim2(runs: pd.DataFrame, column: str = "lambda1") -> list[Verdict]:
    out = []
    for (dataset, model, norm), g in runs.groupby(["dataset", "model", "norm"]):
        adv = g[g.noise == "adv"].set_index("eps")[column]
        rand = g[g.noise == "rand"].set_index("eps")[column]
        common = sorted(e for e in set(adv.index) & set(rand.index) if e > 0)
        if not common:
            continue
        ratios = {e: adv[e] / rand[e] for e in common}
        top = ratios[common[-1]]
        ok = all(r > 1 for r in ratios.values()) and top >= RATIO_MIN
        listing = ", ".join(f"{eps_label(e, norm)}: {r:.2f}" for e, r in ratios.items())
        out.append(
            Verdict(
                "2",
                f"{dataset}-{model}-{norm}",
                ok,
                f"lambda1 adv / rand at equal eps: {listing}; at the largest eps "
                f"{top:.2f} (needs >= {RATIO_MIN}, and > 1 at every eps)",
                {"ratios": ratios, "top": top},
            )
        )
    return out


def claim3(runs: pd.DataFrame) -> list[Verdict]:
    out = []
    nets = runs[(runs.model == "resnet18") & (runs.noise == "adv")]
    for dataset, g in nets.groupby("dataset"):
        if len(g) < 3 or "lambda1" not in g or "robust_gap" not in g:
            continue
        rho_l, rho_g = spearman(g.eps, g.lambda1), spearman(g.eps, g.robust_gap)
        ok = rho_l >= RHO_MIN and rho_g >= RHO_MIN
        out.append(
            Verdict(
                "3",
                f"{dataset}-resnet18-linf",
                ok,
                f"Spearman rho(eps, lambda1) = {rho_l:.3f}, rho(eps, robust gap) = "
                f"{rho_g:.3f} (both need >= {RHO_MIN})",
                {"rho_lambda": rho_l, "rho_gap": rho_g},
            )
        )
    return out


# ---- tables ------------------------------------------------------------------------


def paper_table(runs: pd.DataFrame, family: str, paper: dict) -> pd.DataFrame:
    """Our robust (PGD) accuracies beside the paper's, for every eps either one has;
    random-noise families add accuracy under their own noise."""
    ours = runs[runs.family == family].set_index("eps")
    norm = family.split("-")[2]
    refs = {round(r["eps"] / paper.get("eps_unit", 1), 9): r for r in paper["rows"]}
    rows = []
    for eps in sorted(set(refs) | {round(e, 9) for e in ours.index}):
        row = {"eps": eps_label(eps, norm)}
        if eps in refs:
            row |= {f"paper {k}": refs[eps][k] for k in ("train", "test", "gap")}
        match = [e for e in ours.index if abs(e - eps) < 1e-9]
        if match:
            r = ours.loc[match[0]]
            row |= {
                "PGD train": r.get("robust_train_acc"),
                "PGD test": r.get("robust_test_acc"),
                "PGD gap": r.get("robust_gap"),
            }
            if family.endswith("-rand"):
                row |= {
                    "noise train": r.get("noise_train_acc"),
                    "noise test": r.get("noise_test_acc"),
                    "noise gap": r.get("noise_gap"),
                }
        rows.append(row)
    return pd.DataFrame(rows).round(2)


def sharpness_table(runs: pd.DataFrame) -> pd.DataFrame:
    cols = [
        "family",
        "eps",
        "weight_norm",
        "lambda1",
        "lambda2",
        "lambda3",
        "trace",
        "scaled_lambda1",
        "cf_lambda1",
        "curvature_1d",
    ]
    t = runs[[c for c in cols if c in runs]].copy()
    t["eps"] = [eps_label(e, f.split("-")[2]) for e, f in zip(t.eps, t.family, strict=True)]
    return t.round(4)


# ---- figures -----------------------------------------------------------------------


def _panels(runs: pd.DataFrame, model: str):
    fams = sorted(runs[runs.model == model].family.unique())
    fig, axes = plt.subplots(
        1, max(1, len(fams)), figsize=(3.2 * max(1, len(fams)), 2.9), squeeze=False
    )
    return fig, list(zip(fams, axes[0], strict=False))


def figure_landscapes(
    runs: pd.DataFrame,
    curves_dir: Path,
    out: Path,
    model: str = "lr",
    column: str = "train_obj_loss",
) -> Path:
    """Fig. 2 analogue: 1D landscape of the training objective, colored by eps."""
    fig, panels = _panels(runs, model)
    for family, ax in panels:
        g = runs[runs.family == family].sort_values("eps")
        colors = plt.cm.viridis(np.linspace(0, 0.95, len(g)))
        for (_, r), color in zip(g.iterrows(), colors, strict=True):
            path = curves_dir / f"{r.run_id}.csv"
            if path.is_file():
                c = pd.read_csv(path)
                ax.plot(c.alpha, c[column], color=color, lw=1.2, label=eps_label(r.eps, r.norm))
        ax.set(title=family, xlabel="alpha (filter-normalized)", ylabel="training objective")
        ax.set_yscale("log")
        ax.legend(title="eps", fontsize=6, title_fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def figure_eigenvalues(
    runs: pd.DataFrame, out: Path, model: str = "lr", prefix: str = "lambda"
) -> Path:
    """Fig. 3 analogue: top-3 eigenvalues against eps, each with its linear fit and R^2."""
    fig, panels = _panels(runs, model)
    for family, ax in panels:
        g = runs[runs.family == family].sort_values("eps")
        x = g.eps * (255 if g.norm.iloc[0] == "linf" else 1)
        for k, marker in zip((1, 2, 3), "osd", strict=True):
            col = f"{prefix}{k}"
            if col not in g or g[col].isna().all():
                continue
            slope, icpt, r2 = linear_fit(x, g[col])
            line = ax.plot(x, g[col], marker, ms=4, label=f"$\\lambda_{k}$ (R²={r2:.2f})")[0]
            ax.plot(x, slope * x + icpt, "-", color=line.get_color(), lw=0.8)
        unit = " (x/255)" if g.norm.iloc[0] == "linf" else ""
        ax.set(
            title=family,
            xlabel=f"eps{unit}",
            ylabel="eigenvalue" + (" x ||w||²" if "scaled" in prefix else ""),
        )
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


# ---- rendering ---------------------------------------------------------------------


@dataclass
class Document:
    """A report as blocks, rendered to Markdown and to self-contained HTML."""

    blocks: list[tuple[str, object]] = field(default_factory=list)

    def h(self, text: str, level: int = 2):
        self.blocks.append((f"h{level}", text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, frame: pd.DataFrame):
        self.blocks.append(("table", frame))

    def figure(self, path: Path, caption: str):
        self.blocks.append(("figure", (path, caption)))

    def markdown(self, relative_to: Path) -> str:
        parts = []
        for kind, value in self.blocks:
            if kind.startswith("h"):
                parts.append("#" * int(kind[1]) + " " + value)
            elif kind == "p":
                parts.append(value)
            elif kind == "table":
                escaped = value.apply(
                    lambda c: c.str.replace("|", "\\|") if c.dtype == object else c
                )
                parts.append(escaped.to_markdown(index=False, floatfmt="g"))
            else:
                path, caption = value
                parts.append(f"![{caption}]({path.relative_to(relative_to)})\n\n*{caption}*")
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        parts = []
        for kind, value in self.blocks:
            if kind.startswith("h"):
                parts.append(f"<{kind}>{html.escape(value)}</{kind}>")
            elif kind == "p":
                parts.append(f"<p>{html.escape(value)}</p>".replace("\n", "<br>"))
            elif kind == "table":
                parts.append(value.to_html(index=False, na_rep="", float_format=lambda v: f"{v:g}"))
            else:
                path, caption = value
                data = base64.b64encode(path.read_bytes()).decode()
                parts.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
            "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            "img{max-width:100%}figcaption{font-style:italic;font-size:12px}"
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>advland report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
        )


# ---- the report --------------------------------------------------------------------


def _setup_blocks(doc: Document, params: dict, data_info: dict[str, dict]) -> None:
    doc.h("Set-up actually used")
    data = pd.DataFrame(
        [
            {
                "dataset": n,
                "source": i["source"],
                "train": i["counts"]["train"]["total"],
                "test": i["counts"]["test"]["total"],
                "classes": ", ".join(i["classes"]),
            }
            for n, i in sorted(data_info.items())
        ]
    )
    doc.p("Data (from data/prepared/*.json):")
    doc.table(data)
    flat = pd.json_normalize({k: v for k, v in params.items() if k != "runs"}, sep=".")
    settings = pd.DataFrame({"parameter": flat.columns, "value": [str(v) for v in flat.iloc[0]]})
    doc.p(f"Parameters (params.yaml; {len(params['runs'])} runs, seed {params['seed']}):")
    doc.table(settings)


def build_report(
    run_ids: list[str],
    metrics_dir: Path,
    curves_dir: Path,
    params: dict,
    data_info: dict[str, dict],
    paper: dict,
    out_dir: Path,
) -> dict:
    """Write report.md, report.html, figures/ and tables/runs.csv under out_dir.

    Returns the verdicts as {claim: [{subject, reproduced, evidence}]}.
    """
    figures, tables = out_dir / "figures", out_dir / "tables"
    figures.mkdir(parents=True, exist_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    runs = collect(metrics_dir, run_ids)
    write_csv(tables / "runs.csv", runs)
    doc = Document()
    doc.h("advland report: does adversarial training sharpen the weight loss landscape?", 1)
    doc.p(
        "Generated by the `report` stage from this pipeline's metrics; every number below "
        "comes from the runs listed in params.yaml. Paper values are in reports/paper_values.yaml."
    )

    _setup_blocks(doc, params, data_info)
    verdicts = {
        "1": claim1(runs),
        "1 (||w||²-scaled)": claim1(runs, "scaled_lambda1"),
        "1 (closed-form objective)": claim1(runs, "cf_lambda1"),
        "2": claim2(runs),
        "3": claim3(runs),
    }
    doc.h("Verdicts")
    doc.p(__doc__.split("\n\n", 1)[1].strip())
    rows = [
        {"claim": c, "subject": v.subject, "verdict": v.word, "evidence": v.evidence}
        for c, vs in verdicts.items()
        for v in vs
    ]
    if not verdicts["3"]:
        rows.append(
            {
                "claim": "3",
                "subject": "resnet18",
                "verdict": "not run",
                "evidence": "no ResNet18 runs in params.yaml `runs` (needs CIFAR10/SVHN or the "
                "offline profile, ideally on a GPU)",
            }
        )
    doc.table(pd.DataFrame(rows))

    doc.h("Robust accuracy and generalization gap beside the paper")
    doc.p(
        "PGD columns: accuracy under the evaluation PGD attack of the run's norm and eps. "
        "For random-noise runs the paper's values look like accuracy under that random noise, "
        "so those tables also give `noise` columns (accuracy under the run's own training noise); "
        "compare the paper with `noise`, and read PGD as the stronger test."
    )
    for family in sorted(runs.family.unique()):
        ref = paper["tables"].get(family)
        doc.h(ref["title"] if ref else f"{family} (no paper values)", 3)
        if ref and ref.get("attribution"):
            doc.p(f"Paper attribution: {ref['attribution']}.")
        doc.table(paper_table(runs, family, ref or {"rows": []}))

    doc.h("Sharpness")
    lr = runs[runs.model == "lr"]
    if not lr.empty:
        f2 = figure_landscapes(lr, curves_dir, figures / "fig2_landscapes.png")
        doc.figure(
            f2,
            "Fig. 2 analogue: training objective along one filter-normalized direction "
            "(adversarial loss with PGD re-run at each point, or the noisy loss)",
        )
        f3 = figure_eigenvalues(lr, figures / "fig3_eigenvalues.png")
        doc.figure(
            f3, "Fig. 3 analogue: top-3 Hessian eigenvalues of the training objective against eps"
        )
        f3s = figure_eigenvalues(
            lr, figures / "fig3_eigenvalues_scaled.png", prefix="scaled_lambda"
        )
        doc.figure(
            f3s, "The same, scaled by ||w||² (filter-normalized sharpness for logistic regression)"
        )
    nets = runs[runs.model == "resnet18"]
    if not nets.empty:
        f4 = figure_landscapes(
            nets, curves_dir, figures / "fig4_resnet18_landscapes.png", "resnet18"
        )
        doc.figure(
            f4,
            "Fig. 4 analogue: ResNet18 training objective along a filter-normalized "
            "direction (PGD re-run at each point), per eps",
        )
        f5 = figure_eigenvalues(nets, figures / "resnet18_eigenvalues.png", "resnet18")
        doc.figure(f5, "ResNet18: top-3 Hessian eigenvalues (Lanczos) against eps")
    doc.table(sharpness_table(runs))

    doc.h("Theory checks")
    checks = []
    for col, what in [
        ("theory_gap_fixed", "closed-form Hessian (fixed inputs) vs autograd, max rel. error"),
        ("theory_gap_cf", "closed-form Hessian with delta*(w) vs autograd, max rel. error"),
        ("pgd_cf_max_abs_dev", "Linf: max |x_PGD - x_closed-form| on the test set"),
        ("pyhessian_rel_err", "PyHessian top-k vs exact, max rel. error"),
    ]:
        if col in runs and runs[col].notna().any():
            checks.append(
                {
                    "check": what,
                    "worst over runs": runs[col].max(),
                    "runs": int(runs[col].notna().sum()),
                }
            )
    if {"robust_test_acc", "cf_robust_test_acc"} <= set(runs):
        linf = runs[(runs.norm == "linf") & runs.cf_robust_test_acc.notna()]
        if not linf.empty:
            checks.append(
                {
                    "check": "Linf: |PGD - closed-form| robust test accuracy (points)",
                    "worst over runs": (linf.robust_test_acc - linf.cf_robust_test_acc).abs().max(),
                    "runs": len(linf),
                }
            )
    doc.table(pd.DataFrame(checks))

    doc.h("Wall time per stage (seconds)")
    cols = [f"{s}_seconds" for s in STAGES if f"{s}_seconds" in runs]
    timing = runs[cols].agg(["sum", "median", "max"]).T.round(1)
    doc.table(timing.rename_axis("stage").reset_index())

    with atomic_outputs(out_dir / "report.md", out_dir / "report.html") as (md, page):
        md.write_text(doc.markdown(out_dir))
        page.write_text(doc.html())
    return summary(verdicts)


def summary(verdicts: dict[str, list[Verdict]]) -> dict:
    """Numbers per claim and subject, for `dvc metrics show/diff` and `dvc exp show`."""
    keys = {
        "1": "claim1",
        "1 (||w||²-scaled)": "claim1_scaled",
        "1 (closed-form objective)": "claim1_closed_form",
        "2": "claim2",
        "3": "claim3",
    }
    out: dict = {}
    for claim, vs in verdicts.items():
        for v in vs:
            numbers = {k: float(x) for k, x in v.numbers.items() if not isinstance(x, dict)}
            out.setdefault(keys[claim], {})[v.subject] = {
                "reproduced": bool(v.reproduced),
                **numbers,
            }
    return out
