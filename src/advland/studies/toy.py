"""Kanai et al.'s toy surfaces (their Figs. 2, 4, 5): loss over a 2-D weight, one point.

One data point (x, y) in R^2, labels y in {0, 1} (y_pm = 2y - 1), weights w in R^2,
loss l = softplus(-y_pm f_w(x')), attack budget eps:
- linear, f_w(x) = w.x: standard softplus(-y_pm w.x); L2-adversarial
  softplus(-y_pm w.x + eps ||w||_2); Linf-adversarial softplus(-y_pm w.x + eps ||w||_1)
  (the optimal attack moves the logit by eps ||w||_dual; closed form);
- swish, f_w(x) = swish(w.x) = (w.x) sigmoid(w.x): one unit with swish before the output.
  The attack moves u = w.x anywhere in [u - r, u + r], r = eps ||w||_dual, and swish
  falls to its minimum at u* = -1.27846 and rises after, so the worst logit is exact:
  swish(clip(u*, u - r, u + r)) for y = 1, max(swish(u - r), swish(u + r)) for y = 0.
  PGD (attacks.pgd, no pixel box, every grid point at once: GridModel) is run beside it:
  from x it climbs to the nearer end of the interval, a local maximum that can miss the
  global one for y = 0; the stage reports where and by how much.
EntropySGD's local entropy (Chaudhari et al.) of each surface,
    F(w) = -log int exp(-L(w') - gamma ||w - w'||^2 / 2) dw',
is a quadrature on the same grid: the integral is truncated to [-extent, extent]^2, which
drops the mass of the Gaussian factor outside it, so F is accurate where w is a few
1/sqrt(gamma) inside the edge. Its gradient is gamma (w - E[w']) with E the mean of the
normalized integrand (the same quadrature), so jumps of grad F can be measured exactly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat
from torch import nn

from advland.core.attacks import pgd
from advland.core.config import Params
from advland.core.io import write_csv
from advland.core.models import per_example_loss
from advland.core.sections import AttackConfig, Strict
from advland.metrics.toy import ToyMetrics

LOSSES = ("standard", "l2", "linf")
DUAL = {"l2": 2, "linf": 1}  # the attack norm's dual, which prices ||w|| in the margin


class ToyConfig(Strict):
    """Kanai et al.'s toy surfaces: one point (x, y), 2 weights, eps; a grid of
    `points` x `points` weights in [-extent, extent]^2; EntropySGD coupling gamma."""

    x: list[float] = Field(min_length=2, max_length=2)
    y: Literal[0, 1]
    eps: PositiveFloat
    extent: PositiveFloat
    points: Annotated[int, Field(ge=5)]
    gamma: PositiveFloat
    pgd: AttackConfig
    h: PositiveFloat  # the gradient jump is measured between w and its mirror at distance 2h


def toy_config(params: Params) -> ToyConfig:
    """companion.toy, validated."""
    return params.section("companion.toy", ToyConfig)


class GridModel(nn.Module):
    """f(x_k) = act(w_k . x_k): example k of the batch is scored by its own weights w_k."""

    def __init__(self, w: torch.Tensor, swish: bool):
        super().__init__()
        self.w, self.swish = w, swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (self.w * x).sum(1)
        return F.silu(z) if self.swish else z


def linear_loss(w: torch.Tensor, x: torch.Tensor, y: int, eps: float, kind: str):
    """Closed form for the linear model, w of shape (..., 2)."""
    margin = (2 * y - 1) * (w @ x)
    if kind != "standard":
        margin = margin - eps * torch.linalg.vector_norm(w, DUAL[kind], dim=-1)
    return F.softplus(-margin)


SWISH_MIN = -1.278464542761074  # argmin of u sigmoid(u): u* = -1 - W(e^-1)


def swish_loss(w: torch.Tensor, x: torch.Tensor, y: int, eps: float, kind: str):
    """The swish unit's loss at the exact worst case (module doc)."""
    u = w @ x
    if kind == "standard":
        return F.softplus(-(2 * y - 1) * F.silu(u))
    r = eps * torch.linalg.vector_norm(w, DUAL[kind], dim=-1)
    if y == 1:
        u_star = torch.full_like(u, SWISH_MIN)
        return F.softplus(-F.silu(torch.minimum(torch.maximum(u_star, u - r), u + r)))
    return F.softplus(torch.maximum(F.silu(u - r), F.silu(u + r)))


# The toy models by name, each as its loss (TOY_MODELS[m](w, x, y, eps, kind)).
TOY_MODELS = {"linear": linear_loss, "swish": swish_loss}


def attacked_loss(
    w: torch.Tensor, x, y: int, eps: float, kind: str, swish: bool, cfg
) -> torch.Tensor:
    """Per weight row: the loss at PGD's attack (kind l2 / linf) or at x (standard)."""
    model = GridModel(w, swish)
    xs, ys = x.expand(len(w), 2).clone(), torch.full((len(w),), y)
    if kind != "standard":
        xs = pgd(model, xs, ys, kind, eps, cfg.steps, cfg.step(eps), False, box=None)
    with torch.no_grad():
        return per_example_loss(model(xs), ys)


def smoothed(loss: torch.Tensor, axis: torch.Tensor, gamma: float) -> torch.Tensor:
    """F on the grid: -log sum_ij exp(-L_ij - gamma |w - w'_ij|^2 / 2) h^2 (separable kernel)."""
    h = float(axis[1] - axis[0])
    kernel = torch.exp(-gamma / 2 * (axis[:, None] - axis[None, :]) ** 2)
    shift = (-loss).max()
    z = kernel @ torch.exp(-loss - shift) @ kernel.T
    return -torch.log(z) - shift - 2 * math.log(h)


def smoothed_grad(loss: torch.Tensor, axis: torch.Tensor, gamma: float, w) -> torch.Tensor:
    """grad F(w) = gamma (w - E[w']) for one point w (off the grid allowed)."""
    log_p = -loss - gamma / 2 * ((axis[:, None] - w[0]) ** 2 + (axis[None, :] - w[1]) ** 2)
    p = torch.softmax(log_p.flatten(), 0).view_as(loss)
    mean = torch.stack([(p.sum(1) * axis).sum(), (p.sum(0) * axis).sum()])
    return gamma * (torch.as_tensor(w, dtype=axis.dtype) - mean)


def grid(cfg: ToyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The axis and the grid's weights, one row per point (w1 major), float64."""
    axis = torch.linspace(-cfg.extent, cfg.extent, cfg.points, dtype=torch.float64)
    return axis, torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)


def surfaces(cfg: ToyConfig) -> tuple[dict, torch.Tensor]:
    """{(model, loss): L on the grid (rows w1, columns w2)} and the axis, float64."""
    axis, w = grid(cfg)
    x = torch.tensor(cfg.x, dtype=torch.float64)
    return {
        (model, kind): loss(w, x, cfg.y, cfg.eps, kind).view(cfg.points, cfg.points)
        for model, loss in TOY_MODELS.items()
        for kind in LOSSES
    }, axis


SHORT = 1e-3  # PGD's fixed step leaves up to ~1e-3 at an inner optimum: short beyond that


def pgd_shortfall(cfg: ToyConfig) -> list[dict]:
    """Per model and adversarial loss: PGD's largest shortfall from the exact loss, and
    the share of grid points where it falls short by more than SHORT."""
    _, w = grid(cfg)
    x = torch.tensor(cfg.x, dtype=torch.float64)
    rows = []
    for model, loss in TOY_MODELS.items():
        for kind in LOSSES[1:]:
            gap = loss(w, x, cfg.y, cfg.eps, kind) - attacked_loss(
                w, x, cfg.y, cfg.eps, kind, model == "swish", cfg.pgd
            )
            rows.append(
                {
                    "model": model,
                    "loss": kind,
                    "max_shortfall": float(gap.max()),
                    "share_short": float((gap > SHORT).double().mean()),
                }
            )
    return rows


def gradient_at(model: str, kind: str, w, cfg: ToyConfig) -> torch.Tensor:
    """grad of the unsmoothed loss at one w, by autograd through the exact form."""
    x = torch.tensor(cfg.x, dtype=torch.float64)
    wt = torch.tensor(w, dtype=torch.float64)[None].requires_grad_(True)
    (g,) = torch.autograd.grad(TOY_MODELS[model](wt, x, cfg.y, cfg.eps, kind).sum(), wt)
    return g[0]


def jumps(grids: dict, axis: torch.Tensor, cfg: ToyConfig) -> list[dict]:
    """||grad(w+) - grad(w-)|| across each axis (w+- = (+-h, 1) and (1, +-h)), for L and F."""
    rows = []
    for (model, kind), loss in grids.items():
        for name, (a, b) in {
            "w1=0": ((cfg.h, 1.0), (-cfg.h, 1.0)),
            "w2=0": ((1.0, cfg.h), (1.0, -cfg.h)),
        }.items():
            jl = (gradient_at(model, kind, a, cfg) - gradient_at(model, kind, b, cfg)).norm()
            jf = (
                smoothed_grad(loss, axis, cfg.gamma, a) - smoothed_grad(loss, axis, cfg.gamma, b)
            ).norm()
            rows.append(
                {
                    "model": model,
                    "loss": kind,
                    "across": name,
                    "jump_loss": float(jl),
                    "jump_smoothed": float(jf),
                }
            )
    return rows


def toy_study(cfg: ToyConfig, table: Path) -> ToyMetrics:
    """Write the surfaces L and F in long form (model, loss, w1, w2, L, F) to `table`;
    return the gradient jumps across the axes."""
    grids, axis = surfaces(cfg)
    w1, w2 = (t.flatten().numpy() for t in torch.meshgrid(axis, axis, indexing="ij"))
    frames = [
        pd.DataFrame(
            {
                "model": model,
                "loss": kind,
                "w1": w1,
                "w2": w2,
                "L": loss.flatten().numpy(),
                "F": smoothed(loss, axis, cfg.gamma).flatten().numpy(),
            }
        )
        for (model, kind), loss in grids.items()
    ]
    write_csv(table, pd.concat(frames, ignore_index=True))
    return ToyMetrics(
        jumps=jumps(grids, axis, cfg), pgd=pgd_shortfall(cfg), h=cfg.h, gamma=cfg.gamma, eps=cfg.eps
    )
