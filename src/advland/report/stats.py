"""Statistics behind the verdicts, and the verdicts themselves.

A verdict is decided on the mean over seeds. The same criterion is then applied to
each seed's values alone; `seeds_agree` counts the seeds whose own outcome matches
the verdict ("k of n seeds agree").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from advland.report.render import Document, Figure

RHO_MIN, RATIO_MIN = 0.8, 2.0
CLAIMS = {  # summary key -> how the report names it
    "claim1": "1: adversarial training sharpens (λ1)",
    "claim1_scaled": "1: the same on λ1 ‖w‖²",
    "claim1_closed_form": "1: the same on the closed-form objective",
    "claim2": "2: random noise sharpens much less",
    "claim3": "3: deep nets get sharper, with a larger robust gap",
    "remedy_warmup": "Liu: eps warm-up keeps robust accuracy, lowers λ1",
    "remedy_esgd": "Kanai: EntropySGD trains faster, more robust",
    "remedy_awp": "Wu: AWP lowers λ1 and narrows the robust gap",
    "liu_top20": "Liu: the top-20 eigenvalues rise with eps",
    "liu_collapse": "Liu: the linear model collapses to w = 0 at large eps",
    "kanai_smoothness": "Kanai: the L2 adversarial loss is smooth, the Linf one is not",
    "kanai_entropy": "Kanai: EntropySGD smooths the toy losses",
    "finetune_sharper": "Xu et al.: adversarial fine-tuning sharpens (λ1)",
    "finetune_order": "Xu et al.: sharpness FGSM > PGD > stAdv",
    "finetune_ssim": "Xu et al.: 1 − SSIM of the attack tracks sharpness",
}

# A criterion: the rows of one subject -> (met?, the numbers it was decided on).
Check = Callable[[pd.DataFrame], tuple[bool, dict[str, float]]]


def spearman(x, y) -> float:
    """Spearman's rank correlation (scipy.stats.spearmanr) over the finite pairs;
    NaN when fewer than two pairs or either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def linear_fit(x, y) -> tuple[float, float, float]:
    """Least squares y = a x + b: slope a, intercept b and
    R^2 = 1 - sum (y - a x - b)^2 / sum (y - mean y)^2."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    total = ((y - y.mean()) ** 2).sum()
    resid = ((y - slope * x - intercept) ** 2).sum()
    return float(slope), float(intercept), float(1 - resid / total) if total > 0 else float("nan")


@dataclass
class Verdict:
    claim: str  # the summary key: a key of CLAIMS
    subject: str
    reproduced: bool
    numbers: dict[str, float]
    detail: str  # the key numbers, in words
    seeds_agree: int
    n_seeds: int

    @property
    def word(self) -> str:
        return "reproduced" if self.reproduced else "not reproduced"

    @property
    def agreement(self) -> str:
        return f"{self.seeds_agree} of {self.n_seeds}"


@dataclass
class NotRun:
    """A claim (or one subject of it) that the runs cannot decide, and why."""

    claim: str
    subject: str
    reason: str


def decide(
    claim: str,
    subject: str,
    check: Check,
    describe: Callable[[dict[str, float]], str],
    mean: pd.DataFrame,
    per_seed: pd.DataFrame,
) -> Verdict:
    """`check` on the mean over seeds decides; on each seed's rows alone it agrees or not."""
    ok, numbers = check(mean)
    outcomes = [check(rows)[0] for _, rows in per_seed.groupby("seed", sort=False)]
    agree = sum(bool(o) == bool(ok) for o in outcomes)
    return Verdict(claim, subject, bool(ok), numbers, describe(numbers), agree, len(outcomes))


@dataclass
class Study:
    """What one study adds to the report: verdicts, claims it could not decide, the
    figures for the Summary, and its own section."""

    verdicts: list[Verdict] = field(default_factory=list)
    not_run: list[NotRun] = field(default_factory=list)
    highlights: list[Figure] = field(default_factory=list)
    section: Document = field(default_factory=Document)
