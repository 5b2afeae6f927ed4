"""Attacks in [0,1] pixel space: PGD, FGSM, and the closed-form optimum of linear models.

PGD step: x += a d with d the norm's steepest-ascent direction of g = d loss / d x
(sign(g) for Linf, g / ||g|| for L2). Then delta is projected onto the eps-ball and
x + delta clamped to the box [0,1]. The random start is uniform in the ball.

A linear model's d does not depend on x (models.LogisticRegression.ascent_direction), so PGD
needs no forward pass (Norm.linear_steps): in Linf k steps of size a are one step of size
k a; in L2 a step is three passes over the batch instead of six.

Closed form for f(x) = w.x + b and labels y_pm in {-1,+1}:
- L2, no box:     delta* = -eps y_pm w / ||w||       (margin drops by eps ||w||_2)
- Linf, with box: x*     = clip(x - eps y_pm sign(w), 0, 1)   (separable per pixel)
At w = 0 both give delta = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from advland.core.models import per_example_loss
from advland.core.norms import NORMS, Box, clamp_box


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d loss_i / d x_i for every example, by autograd."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(per_example_loss(model(x), y).sum(), x)
    return grad


def ascent_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str):
    """The norm's steepest-ascent direction of the input gradient (0 where g = 0)."""
    return NORMS[norm].steepest_(input_grad(model, x, y))


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    steps: int,
    step_size: float,
    random_start: bool = True,
    box: Box = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on the per-example loss; returns x_adv (no grad).

    Every step works in place on one buffer in the usual order (step, project
    x_adv - x onto the ball, clamp x + delta to the box), so Linf results equal
    torchattacks' bit for bit from the same start. A linear model takes linear_steps.
    """
    if eps == 0:
        return x
    geometry = NORMS[norm]
    was_training = model.training
    model.eval()
    delta = (
        geometry.sample_ball(x, eps, generator).to(x.device)
        if random_start
        else torch.zeros_like(x)
    )
    x_adv = clamp_box(x + delta, box)
    if hasattr(model, "ascent_direction"):  # linear: the direction is the same at every x
        direction = model.ascent_direction(y, norm).view_as(x)
        x_adv = linear_steps(x_adv, x, direction, norm, eps, steps, step_size, box)
    else:
        for _ in range(steps):
            x_adv.add_(ascent_direction(model, x_adv, y, norm), alpha=step_size)
            # delta = P(x_adv - x); x_adv = clamp(x + delta): in place, in the usual order
            x_adv = geometry.project_(x_adv.sub_(x), eps).add_(x)
            if box is not None:
                x_adv.clamp_(*box)
    model.train(was_training)
    return x_adv.detach()


def linear_steps(
    x_adv: torch.Tensor,
    x: torch.Tensor,
    direction: torch.Tensor,
    norm: str,
    eps: float,
    steps: int,
    step_size: float,
    box: Box,
) -> torch.Tensor:
    """PGD's steps from x_adv when the ascent direction d is the same at every x.

    Equal to the step-by-step loop up to float rounding (tests/test_attacks.py).
    """
    if steps == 0:
        return x_adv
    geometry = NORMS[norm]
    v = geometry.linear_steps(x_adv, x, direction, eps, steps, step_size, box)
    return clamp_box(geometry.project_(v, eps).add_(x), box)


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, box: Box = (0.0, 1.0)
) -> torch.Tensor:
    """One full step of size eps from x (FGSM for Linf, fast gradient method for L2)."""
    return pgd(model, x, y, norm, eps, steps=1, step_size=eps, random_start=False, box=box)


def optimal_linear(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, norm: str, eps: float, box: Box = None
) -> torch.Tensor:
    """The exact worst case for a linear binary model (see module doc); y in {0,1}."""
    y_pm = (2 * y - 1).to(x.dtype).view(-1, *[1] * (x.ndim - 1))
    return clamp_box(x - eps * y_pm * NORMS[norm].unit(w[None]).view_as(x[0]), box)
