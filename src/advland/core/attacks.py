"""Attacks in [0,1] pixel space: PGD, FGSM, stAdv, and the closed-form optimum of linear models.

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

stAdv (Xiao et al. 2018) moves pixels instead of changing their values: a flow
f = (du, dv) per pixel (in pixels) and x_adv(p) = bilinear sample of x at p + f(p). It
minimizes sum_i [margin_i + tau L_flow_i] with the margin loss max(z_y - max_{j!=y} z_j, -kappa)
and L_flow = sum_p sum_{q in N4(p)} sqrt(||du_p - du_q||^2 + ||dv_p - dv_q||^2 + FLOW_EPS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advland.core.models import is_linear, per_example_loss
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
    if is_linear(model):  # the direction is the same at every x
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


FLOW_EPS = 1e-8  # inside L_flow's square root: its gradient stays finite at zero flow


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) resampled at p + flow(p); flow (N, 2, H, W) = (du, dv) in pixels
    (du along the width, dv along the height).

    grid_sample with align_corners=True, so that -1 and +1 are the centres of the corner
    pixels and zero flow samples every pixel at its own centre (the identity);
    padding_mode="border": a pixel that flows out of the image takes the nearest edge
    value (Xiao et al. clip the sampling coordinates to the image), never zeros.
    """
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=x.dtype, device=x.device),
        torch.arange(w, dtype=x.dtype, device=x.device),
        indexing="ij",
    )
    gx = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack((gx, gy), dim=-1)  # (N, H, W, 2), x first as grid_sample wants
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def flow_smoothness(flow: torch.Tensor) -> torch.Tensor:
    """L_flow of each example (N,): every ordered pair (p, q) of 4-neighbours inside the
    image counts once, so every unordered pair twice."""
    dh = flow[:, :, 1:, :] - flow[:, :, :-1, :]  # vertical neighbours
    dw = flow[:, :, :, 1:] - flow[:, :, :, :-1]  # horizontal neighbours
    pairs = [(d.pow(2).sum(1) + FLOW_EPS).sqrt().flatten(1).sum(1) for d in (dh, dw)]
    return 2 * (pairs[0] + pairs[1])


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """max(z_y - max_{j != y} z_j, -kappa) per example (for one logit, a binary model:
    the signed margin (2y - 1) z): negative once misclassified."""
    if logits.ndim == 1 or logits.shape[1] == 1:
        margin = (2 * y - 1).to(logits.dtype) * logits.flatten()
    else:
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        margin = true - other
    return margin.clamp_min(-kappa)


def stadv(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    tau: float,
    steps: int,
    lr: float,
    kappa: float = 0.0,
) -> torch.Tensor:
    """stAdv: Adam with step `lr` (pixels) for `steps` steps on the flow, from zero flow;
    returns flow_warp(x, flow) (no grad). Adam instead of the paper's L-BFGS: its steps are
    per coordinate, so each example's result does not depend on the rest of its batch."""
    was_training = model.training
    model.eval()
    flow = torch.zeros(x.shape[0], 2, *x.shape[2:], dtype=x.dtype, device=x.device)
    flow.requires_grad_(True)
    opt = torch.optim.Adam([flow], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = margin_loss(model(flow_warp(x, flow)), y, kappa) + tau * flow_smoothness(flow)
            (flow.grad,) = torch.autograd.grad(loss.sum(), flow)
            opt.step()
    model.train(was_training)
    with torch.no_grad():
        return flow_warp(x, flow.detach())
