"""Attacks in [0,1] pixel space: PGD (L2, Linf), FGSM, and the closed-form optimum of linear models.

PGD step: Linf x += a sign(g); L2 x += a g / ||g|| (0 where g = 0). Then delta is
projected onto the eps-ball and x + delta clamped to the box [0,1]. The random start is uniform
in the ball (noise.sample_ball).

Closed form for f(x) = w.x + b and labels y_pm in {-1,+1}:
- L2, no box:     delta* = -eps y_pm w / ||w||       (margin drops by eps ||w||_2)
- Linf, with box: x*     = clip(x - eps y_pm sign(w), 0, 1)   (separable per pixel)
At w = 0 both give delta = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from advland.models import per_example_loss
from advland.noise import flat_norm, sample_ball

Box = tuple[float, float] | None


def loss_and_input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Per-example loss and d loss / d x; analytic when the model provides it."""
    if hasattr(model, "loss_and_input_grad"):
        return model.loss_and_input_grad(x, y)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = per_example_loss(model(x), y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def project_(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Euclidean projection onto the eps-ball of the norm, per example, in place."""
    if norm == "linf":
        return delta.clamp_(-eps, eps)
    return delta.mul_((eps / flat_norm(delta).clamp_min(1e-12)).clamp_(max=1.0))


def clamp_box(x: torch.Tensor, box: Box) -> torch.Tensor:
    return x if box is None else x.clamp(*box)


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
    torchattacks' bit for bit from the same start.
    """
    if eps == 0:
        return x
    was_training = model.training
    model.eval()
    delta = (
        sample_ball(x, norm, eps, generator).to(x.device) if random_start else torch.zeros_like(x)
    )
    x_adv = clamp_box(x + delta, box)
    for _ in range(steps):
        _, grad = loss_and_input_grad(model, x_adv, y)
        if norm == "linf":
            x_adv.add_(grad.sign_(), alpha=step_size)
        else:
            x_adv.addcmul_(grad, step_size / flat_norm(grad).clamp_min(1e-12))
        # delta = P(x_adv - x); x_adv = clamp(x + delta): in place, in the usual order
        x_adv = project_(x_adv.sub_(x), norm, eps).add_(x)
        if box is not None:
            x_adv.clamp_(*box)
    model.train(was_training)
    return x_adv.detach()


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
    if norm == "linf":
        delta = -eps * y_pm * w.sign().view_as(x[0])
    else:
        delta = -eps * y_pm * (w / w.norm().clamp_min(1e-12)).view_as(x[0])
    return clamp_box(x + delta, box)
