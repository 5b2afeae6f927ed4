"""Closed forms for binary logistic regression, theta = (w, b), labels y_pm in {-1,+1}.

Fixed inputs (Gauss-Newton form, exact for a GLM):
    L(theta) = mean_i softplus(-m_i),  m_i = y_i (w.x_i + b)
    H = mean_i s_i (1 - s_i) xh_i xh_i^T,  s_i = sigmoid(-m_i),  xh_i = (x_i, 1).

L2 adversarial loss with the optimal attack delta*(w) = -eps y w/||w|| (no box):
    m_i = y_i (w.x_i + b) - eps ||w||
    H = mean_i s_i (1 - s_i) a_i a_i^T + eps mean_i(s_i) [(I - u u^T) / ||w||  on the w block]
with a_i = -y_i (x~_i, 1), x~_i = x_i - eps y_i u the adversarial point, u = w/||w||.
The second term is the sharpening that random noise lacks (Yamada et al. 2021, Thm 1).

Linf adversarial loss with the box-constrained optimum x* = clip(x - eps y sign(w), 0, 1):
x* is piecewise constant in w, so away from sign changes the Hessian is the
fixed-input one at x*. CLOSED_FORMS gives each norm's objective and Hessian.

Collapse to w = 0 (Liu et al. 2020). J(w, b) = mean_i softplus(-y_i b + phi_i(w)) with
phi_i(w) = max_{x' in C_i} -y_i w.x' (C_i the attack set of x_i) is convex, and phi_i is the
support function of -y_i C_i, so d phi_i(0) = -y_i C_i. At w = 0 the best bias is
b* = logit(p) (p the fraction of positives): then s_i = sigmoid(-y_i b*) is 1 - p on
positives and p on negatives, mean_i s_i = 2 p (1 - p), and
    0 in d_w J(0, b*)  <=>  0 in mean_i s_i y_i C_i  <=>  0 in mean_+ C_i - mean_- C_i.
No box, C_i = x_i + eps B (B the attack norm's unit ball): mean_+ C - mean_- C =
mu_+ - mu_- + 2 eps B, so w = 0 is optimal iff eps >= ||mu_+ - mu_-|| / 2 in the attack
norm (Linf attack: ||.||_inf; L2: ||.||_2; the penalty eps ||w||_dual has d||.||_dual(0) = B).
Linf with the box, C_i is the product of [lo_ij, hi_ij] = [max(x_ij - eps, 0),
min(x_ij + eps, 1)], so per pixel: mean_+ lo_j <= mean_- hi_j and mean_- lo_j <= mean_+ hi_j,
monotone in eps: the threshold is found by bisection. L2 with the box: C_i shrinks, so the
no-box value is a lower bound (`collapse_eps` returns it with exact=False).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from advland.core.attacks import optimal_linear
from advland.core.registry import Registry


def _pm(y: torch.Tensor, dtype) -> torch.Tensor:
    return (2 * y - 1).to(dtype)


def fixed_input_loss(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean softplus(-y (w.x + b)) with theta = (w, b) flat and x of shape (n, d)."""
    w, b = theta[:-1], theta[-1]
    return F.softplus(-_pm(y, x.dtype) * (x @ w + b)).mean()


def l2_adversarial_loss(
    theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float
) -> torch.Tensor:
    """mean softplus(-(y (w.x + b) - eps ||w||)): the loss at delta*(w), w-dependence included."""
    w, b = theta[:-1], theta[-1]
    return F.softplus(-(_pm(y, x.dtype) * (x @ w + b) - eps * w.norm())).mean()


def linf_adversarial_loss(
    theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float, box=None
) -> torch.Tensor:
    """The loss at the optimal Linf attack. No box: margin y (w.x + b) - eps ||w||_1.
    With the box: the fixed-input loss at x*(w) = clip(x - eps y sign(w), box); x* is
    piecewise constant in w, so its gradient is the fixed-input one (Danskin)."""
    if box is None:
        w, b = theta[:-1], theta[-1]
        return F.softplus(-(_pm(y, x.dtype) * (x @ w + b) - eps * w.abs().sum())).mean()
    x_star = optimal_linear(x, y, theta[:-1].detach(), "linf", eps, box=box)
    return fixed_input_loss(theta, x_star, y)


def _box_condition(pos: torch.Tensor, neg: torch.Tensor, eps: float, box) -> bool:
    """0 in mean_+ C_i - mean_- C_i for the Linf attack sets C_i clipped to the box."""
    lo_p, hi_p = (pos - eps).clamp(min=box[0]).mean(0), (pos + eps).clamp(max=box[1]).mean(0)
    lo_n, hi_n = (neg - eps).clamp(min=box[0]).mean(0), (neg + eps).clamp(max=box[1]).mean(0)
    return bool(((lo_p <= hi_n) & (lo_n <= hi_p)).all())


def collapse_eps(
    x: torch.Tensor, y: torch.Tensor, norm: str, box=None, iters: int = 60
) -> tuple[float, bool]:
    """(eps*, exact): the smallest eps at which w = 0, b = logit(p) minimizes the
    adversarial logistic loss (module doc). exact=False: a lower bound (L2 with the box)."""
    x = x.flatten(1).double()
    pos, neg = x[y == 1], x[y == 0]
    gap = pos.mean(0) - neg.mean(0)
    no_box = float((gap.abs().max() if norm == "linf" else gap.norm()) / 2)
    if box is None or norm == "l2":
        return no_box, box is None
    lo, hi = 0.0, float(box[1] - box[0])  # at eps = box width every C_i is the whole box
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _box_condition(pos, neg, mid, box) else (mid, hi)
    return hi, True


def fixed_input_hessian(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w, b = theta[:-1], theta[-1]
    s = torch.sigmoid(-_pm(y, x.dtype) * (x @ w + b))
    xh = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    return (xh * (s * (1 - s))[:, None]).T @ xh / len(x)


def l2_adversarial_hessian(
    theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float
) -> torch.Tensor:
    w, b = theta[:-1], theta[-1]
    y_pm = _pm(y, x.dtype)
    norm = w.norm()
    u = w / norm
    s = torch.sigmoid(-(y_pm * (x @ w + b) - eps * norm))
    x_adv = x - eps * y_pm[:, None] * u[None, :]
    a = -y_pm[:, None] * torch.cat([x_adv, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    h = (a * (s * (1 - s))[:, None]).T @ a / len(x)
    d = len(w)
    h[:d, :d] += eps * s.mean() * (torch.eye(d, dtype=x.dtype) - torch.outer(u, u)) / norm
    return h


class ClosedForm(NamedTuple):
    """A linear model's adversarial objective with the optimal attack, and its Hessian."""

    loss: Callable[[torch.Tensor], torch.Tensor]
    hessian: torch.Tensor


def l2_closed_form(theta, x, y, eps) -> ClosedForm:
    return ClosedForm(
        lambda t: l2_adversarial_loss(t, x, y, eps), l2_adversarial_hessian(theta, x, y, eps)
    )


def linf_closed_form(theta, x, y, eps) -> ClosedForm:
    x_star = optimal_linear(x, y, theta[:-1], "linf", eps, box=(0.0, 1.0))
    return ClosedForm(
        lambda t: fixed_input_loss(t, x_star, y), fixed_input_hessian(theta, x_star, y)
    )


CLOSED_FORMS: Registry[Callable[..., ClosedForm]] = Registry(
    "norm with a closed-form objective", {"l2": l2_closed_form, "linf": linf_closed_form}
)
