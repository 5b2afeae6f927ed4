"""Norm balls in pixel space: projection, sampling, steepest ascent, and how eps is written.

Each norm is one object in the NORMS registry; code that depends on the norm asks the
object, so a third norm is one new class, and an unknown name is an error.

- L2:   project delta -> eps delta / max(||delta||, eps); steepest ascent g / ||g||;
        uniform in the ball: a Gaussian direction at radius eps U^(1/d), so that
        P(r <= t) = (t / eps)^d; Gaussian noise of per-coordinate variance eps^2 / (d + 2).
- Linf: project = clamp to [-eps, eps]; steepest ascent sign(g); uniform in the cube;
        Gaussian noise of variance eps^2 / 3. eps on the 1/255 grid is written K_255.
"""

from __future__ import annotations

import torch

from advland.core.registry import Registry

Box = tuple[float, float] | None


def flat_norm(t: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Per-example norm over all but the first dimension, shaped to broadcast."""
    return torch.linalg.vector_norm(t, p, dim=tuple(range(1, t.ndim)), keepdim=True)


def norm_at_least(v: torch.Tensor, eps: float) -> torch.Tensor:
    """max(||v_i||_2, eps) per example: eps v / norm_at_least(v, eps) is v projected onto
    the eps-ball."""
    return flat_norm(v).clamp_(min=eps)


def clamp_box(x: torch.Tensor, box: Box) -> torch.Tensor:
    return x if box is None else x.clamp(*box)


class Norm:
    """Geometry of one norm's eps-ball; see the module doc for the formulas."""

    name: str
    exact_linear_box: bool  # the closed-form linear attack stays exact inside the [0,1] box
    plot_scale: float = 1.0  # eps is plotted as eps * plot_scale
    plot_unit: str = ""

    def project_(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        """Euclidean projection onto the eps-ball, per example, in place."""
        raise NotImplementedError

    def sample_ball(self, like: torch.Tensor, eps: float, generator=None) -> torch.Tensor:
        """One perturbation per example, uniform in the eps-ball."""
        raise NotImplementedError

    def gaussian_std(self, dim: int, eps: float) -> float:
        """Per-coordinate std of Gaussian noise with the uniform ball's variance."""
        raise NotImplementedError

    def steepest_(self, grad: torch.Tensor) -> torch.Tensor:
        """The unit-ball direction of steepest ascent for a gradient, per example, in place."""
        raise NotImplementedError

    def unit(self, w: torch.Tensor) -> torch.Tensor:
        """Rows of w mapped to their steepest-ascent direction (0 at w = 0)."""
        return self.steepest_(w.clone())

    def linear_steps(self, x_adv, x, direction, eps, steps, step_size, box):
        """PGD's steps when the ascent direction is the same at every x (attacks.linear_steps)."""
        raise NotImplementedError

    def format_eps(self, eps: float) -> str:
        """eps as written in run ids: no dots (DVC splits params keys on them), 0.2 -> 0p2."""
        return f"{eps:g}".replace(".", "p")

    def label(self, eps: float) -> str:
        """eps as written in tables and legends."""
        return f"{eps:g}"


class L2(Norm):
    name, exact_linear_box = "l2", False

    def project_(self, delta, eps):
        return delta.mul_(eps / norm_at_least(delta, eps))

    def sample_ball(self, like, eps, generator=None):
        d = like[0].numel()
        direction = torch.randn(like.shape, generator=generator, dtype=like.dtype)
        direction /= flat_norm(direction).clamp_min(1e-12)
        radius = eps * torch.rand(len(like), generator=generator, dtype=like.dtype) ** (1.0 / d)
        return direction * radius.view(-1, *[1] * (like.ndim - 1))

    def gaussian_std(self, dim, eps):
        return eps / (dim + 2) ** 0.5

    def steepest_(self, grad):
        return grad.div_(flat_norm(grad).clamp_min(1e-12))

    def linear_steps(self, x_adv, x, direction, eps, steps, step_size, box):
        """With v = x_adv + a d - x and P(v) = eps v / max(||v||, eps), the usual step is
        x_adv' = clamp(x + P(v), box), so between steps v' = clamp(a d + P(v), box - x + a d):
        one norm, one addcdiv and one clamp over the batch."""
        x_flat, a_d = x.flatten(1), direction.flatten(1) * step_size
        v = (x_adv.flatten(1) - x_flat).add_(a_d)
        if box is not None:
            lo, hi = (bound - x_flat + a_d for bound in box)
        for _ in range(steps - 1):
            torch.addcdiv(a_d, v, norm_at_least(v, eps), value=eps, out=v)
            if box is not None:
                v.clamp_(lo, hi)
        return v.view_as(x)


class Linf(Norm):
    name, exact_linear_box = "linf", True
    plot_scale, plot_unit = 255.0, " (x/255)"

    def project_(self, delta, eps):
        return delta.clamp_(-eps, eps)

    def sample_ball(self, like, eps, generator=None):
        u = torch.rand(like.shape, generator=generator, dtype=like.dtype)
        return eps * (2 * u - 1)

    def gaussian_std(self, dim, eps):
        return eps / 3**0.5

    def steepest_(self, grad):
        return grad.sign_()

    def linear_steps(self, x_adv, x, direction, eps, steps, step_size, box):
        """Each pixel moves one way until it stops at its bound: k steps of size a are one
        step of size k a."""
        return x_adv.add_(direction, alpha=steps * step_size).sub_(x)

    def format_eps(self, eps):
        return f"{round(eps * 255, 4):g}_255".replace(".", "p") if eps > 0 else "0"

    def label(self, eps):
        return f"{eps * 255:g}/255"


NORMS: Registry[Norm] = Registry("norm", {"l2": L2(), "linf": Linf()})
