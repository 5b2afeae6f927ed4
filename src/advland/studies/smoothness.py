"""Kanai et al. (2021), measured: is the adversarial loss of a linear model smooth?

For an objective L (standard, L2- or Linf-adversarial with the attack re-optimized in
closed form at every weight, theory.OBJECTIVES) at weights theta, the gradient's local
Lipschitz ratio along a unit direction u at radius r is

    R(r, u) = ||grad L(theta + r u) - grad L(theta)||_2 / r,

in float64 over the training set. A smooth L has R(r) -> ||H u|| as r -> 0; a gradient
that jumps by J across a kink at distance < r gives R ~ J / r. Two points per objective:
the trained weights, and the same weights with the coordinate j of the largest
|mu_+ - mu_-| (class means) set to +tiny, with u_j < 0 so every step crosses w_j = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from pydantic import Field, PositiveFloat, PositiveInt, field_validator

from advland.core.config import Params
from advland.core.errors import CheckpointError, ParamsError
from advland.core.io import write_csv
from advland.core.models import checkpoint_path, is_linear, load_model
from advland.core.registry import Registry
from advland.core.rng import rng
from advland.core.sections import Strict, parse_eps
from advland.data import Dataset
from advland.measure.theory import fixed_input_loss, l2_adversarial_loss, linf_adversarial_loss
from advland.metrics.smoothness import SmoothnessMetrics

BOX = (0.0, 1.0)
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
OBJECTIVES: Registry[Objective] = Registry(
    "objective",
    {
        "standard": lambda t, x, y, eps: fixed_input_loss(t, x, y),
        "l2": l2_adversarial_loss,  # no box: the closed form delta* = -eps y w / ||w||
        "linf": lambda t, x, y, eps: linf_adversarial_loss(t, x, y, eps, BOX),  # as trained
    },
)
# Verdict inputs: R at the smallest radius over R at SETTLE_AT (median over directions).
SETTLE_AT = 1e-3


class SmoothPoint(Strict):
    """An objective evaluated at a trained run's weights (its first seed)."""

    run: str
    eps: float

    _eps = field_validator("eps", mode="before")(parse_eps)


class SmoothPoints(Strict):
    standard: SmoothPoint
    l2: SmoothPoint
    linf: SmoothPoint


class SmoothnessConfig(Strict):
    """Kanai et al.'s smoothness: ||grad L(w + r u) - grad L(w)|| / r over radii r and
    random unit directions u, per objective (standard, l2, linf) at its trained weights
    and at the same weights with one coordinate moved to +tiny (a sign change)."""

    points: SmoothPoints
    radii: list[PositiveFloat] = Field(min_length=2)
    directions: PositiveInt
    tiny: PositiveFloat
    n_train: PositiveInt | None
    seed: int


def smoothness_config(params: Params, dataset: str) -> SmoothnessConfig:
    """companion.linear.<dataset>.smoothness, validated; each point is an lr run on
    `dataset` listed in runs."""
    where = f"companion.linear.{dataset}.smoothness"
    cfg = params.section(where, SmoothnessConfig)
    for key, point in cfg.points:
        run = params.runs.get(point.run)
        if run is None or run.dataset != dataset or run.model != "lr":
            raise ParamsError(
                f"{where}.points.{key}.run: {point.run!r} is not an lr run on {dataset} "
                "listed in runs"
            )
    return cfg


def gradient(objective: Objective, theta, x, y, eps: float) -> torch.Tensor:
    t = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(t, x, y, eps), t)
    return g


def ratios(objective, theta, x, y, eps, radii, directions) -> list[dict]:
    """R(r, u) for every radius and direction (rows of `directions`, unit norm)."""
    g0 = gradient(objective, theta, x, y, eps)
    return [
        {
            "direction": k,
            "radius": r,
            "ratio": float((gradient(objective, theta + r * u, x, y, eps) - g0).norm() / r),
        }
        for k, u in enumerate(directions)
        for r in radii
    ]


def sign_change_point(theta, x, y, tiny: float, directions) -> tuple[torch.Tensor, torch.Tensor]:
    """theta with w_j = +tiny for j = argmax |mu_+ - mu_-|, and the directions with u_j < 0."""
    j = int((x[y == 1].mean(0) - x[y == 0].mean(0)).abs().argmax())
    point = theta.clone()
    point[j] = tiny
    crossing = directions.clone()
    crossing[:, j] = -crossing[:, j].abs()
    return point, crossing


def trained_theta(models: Path, run: str, seed: int) -> torch.Tensor:
    """(w, b) of a trained logistic regression, float64."""
    model, _ = load_model(checkpoint_path(models / run, seed))
    if not is_linear(model):
        raise CheckpointError(f"{models / run}: not a logistic regression")
    return torch.cat([model.w.detach(), model.b.detach()[None]]).double()


def smoothness_study(
    data: Dataset, models: Path, seed: int, cfg: SmoothnessConfig, table: Path
) -> SmoothnessMetrics:
    """Write R for every objective, point, direction and radius to `table`; return, per
    objective and point, the median over directions of R at the smallest radius and at
    SETTLE_AT, and their ratio `growth`."""
    x, y = data.x_train[: cfg.n_train].flatten(1).double(), data.y_train[: cfg.n_train]
    points = {k: (trained_theta(models, p.run, seed), p.eps) for k, p in cfg.points}
    gen = rng(cfg.seed, "smoothness")
    rows = []
    for name, (theta, eps) in points.items():
        objective = OBJECTIVES[name]
        u = torch.randn(cfg.directions, len(theta), generator=gen, dtype=torch.float64)
        u /= u.norm(dim=1, keepdim=True)
        crossing_point, crossing = sign_change_point(theta, x, y, cfg.tiny, u)
        for where, at, dirs in (("trained", theta, u), ("sign_change", crossing_point, crossing)):
            for row in ratios(objective, at, x, y, eps, cfg.radii, dirs):
                rows.append({"objective": name, "point": where, "eps": eps} | row)
    frame = pd.DataFrame(rows)
    summary: dict = {}
    small = min(cfg.radii)
    for (name, where), g in frame.groupby(["objective", "point"], sort=False):
        med = g.groupby("radius").ratio.median()
        settle = med.iloc[(med.index.to_series() - SETTLE_AT).abs().argmin()]
        summary.setdefault(name, {})[where] = {
            "ratio_smallest": float(med[small]),
            "ratio_settle": float(settle),
            "growth": float(med[small] / settle),
            "radius_smallest": small,
        }
    write_csv(table, frame)
    return SmoothnessMetrics.model_validate(summary)
