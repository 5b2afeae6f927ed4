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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from advland.core.attacks import optimal_linear
from advland.core.errors import Registry


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
