"""Robust flatness (Stutz, Hein & Schiele 2021, "Relating adversarially robust
generalization to flat minima"): how much the robust loss rises under relative
weight perturbations, with the attack re-run at the perturbed weights.

R(w) = L(w, perturb(f_w, x, y)) is the robust loss, L(w, x') = loss_fn(f_w(x'), y). The
weight perturbation nu is layer-wise relative, each tensor of model.parameters() a layer
(weights, biases, BatchNorm's affine): ||nu_l||_2 <= xi ||w_l||_2, so a rescaling that
leaves the function unchanged (w_l -> a w_l) rescales nu_l with it and changes no value.
- robust_flatness_average: mean_j R(w + nu_j) - R(w), nu_j on the relative sphere
  ||nu_l|| = xi ||w_l|| (relative_sphere), the attack re-run at every w + nu_j;
- robust_flatness_worst: max over nu in the relative ball and x' in the eps-ball around x
  (and the box) of L(w + nu, x') - R(w), by joint ascent on (nu, x').
Both run in eval mode and restore the model's mode and weights (sharpness.evaluating).
"""

from __future__ import annotations

import torch
from torch import nn

from advland.core.norms import NORMS, Box, clamp_box
from advland.core.perturb import Perturb
from advland.measure.sharpness import Loss, evaluating, gaussian_like, set_weights


def sphere_around(
    weights: list[torch.Tensor], xi: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """nu_l = xi ||w_l|| z_l / ||z_l||, z_l ~ N(0, I): uniform on each layer's sphere."""
    z = gaussian_like(weights, generator)
    return [
        xi * w.norm() * zl / zl.norm().clamp_min(1e-30) for w, zl in zip(weights, z, strict=True)
    ]


def relative_sphere(model: nn.Module, xi: float, generator: torch.Generator) -> list[torch.Tensor]:
    """One draw per parameter tensor, ||nu_l||_2 = xi ||w_l||_2, direction uniform."""
    return sphere_around([p.detach() for p in model.parameters()], xi, generator)


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss) -> float:
    return loss_fn(model(x), y).item()


def robust_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss, perturb: Perturb
) -> float:
    """R(w) = L(w, perturb(model, x, y)) at the model's current weights."""
    return _loss(model, perturb(model, x, y).detach(), y, loss_fn)


def robust_flatness_average(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Loss,
    perturb: Perturb,
    xi: float,
    draws: int,
    generator: torch.Generator,
) -> float:
    """mean_j R(w + nu_j) - R(w), nu_j ~ relative_sphere(xi) drawn from `generator`, the
    attack `perturb` re-run at every w + nu_j (draws + 1 attacks over x)."""
    with evaluating(model) as w0:
        reference = robust_loss(model, x, y, loss_fn, perturb)
        total = 0.0
        for _ in range(draws):
            nu = sphere_around(w0, xi, generator)
            set_weights(model, [w + n for w, n in zip(w0, nu, strict=True)])
            total += robust_loss(model, x, y, loss_fn, perturb)
    return total / draws - reference


def _project_layers(nu: list[torch.Tensor], radii: list[torch.Tensor]) -> None:
    """nu_l -> r_l nu_l / max(||nu_l||, r_l), in place (0 when r_l = 0)."""
    for n, r in zip(nu, radii, strict=True):
        n.mul_(r / torch.maximum(n.norm(), r).clamp_min(torch.finfo(n.dtype).tiny))


def robust_flatness_worst(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Loss,
    perturb: Perturb,
    norm: str,
    eps: float,
    xi: float,
    steps: int,
    generator: torch.Generator,
    input_step: float | None = None,
    weight_step: float | None = None,
    box: Box = (0.0, 1.0),
) -> float:
    """max L(w + nu, x') - R(w) over ||nu_l|| <= xi ||w_l|| and x' - x in the eps-ball of
    `norm` (x' in `box`), by `steps` joint ascent steps, each one forward and backward:
    - nu_l += weight_step ||w_l|| g_l / ||g_l||, projected onto its ball (Stutz et al.'s
      layer-wise relative L2 step; weight_step defaults to 2 xi);
    - x' += input_step * steepest(g_x') (sign for Linf, g / ||g|| for L2), projected onto
      the eps-ball and the box (input_step defaults to 2.5 eps / steps, Madry et al.).
    Starts at x' = perturb(model, x, y) at w and nu uniform in radius on each layer's
    sphere (nu_l = U_l * relative_sphere, U_l ~ U[0, 1]). Returns the best loss seen, the
    point (0, x'_0) included, minus R(w) = L(w, x'_0): so >= 0. At eps = 0 (or a perturb
    that is not an attack) the inputs stay at x'_0."""
    geometry = NORMS[norm]
    a_x = 2.5 * eps / steps if input_step is None else input_step
    a_w = 2 * xi if weight_step is None else weight_step
    with evaluating(model) as w0:
        params = list(model.parameters())
        x_adv = perturb(model, x, y).detach()
        reference = _loss(model, x_adv, y, loss_fn)
        radii = [xi * w.norm() for w in w0]
        steps_w = [a_w * w.norm() for w in w0]
        nu = sphere_around(w0, xi, generator)
        nu = [n * torch.rand((), generator=generator, dtype=n.dtype).item() for n in nu]
        best = reference
        for k in range(steps + 1):
            set_weights(model, [w + n for w, n in zip(w0, nu, strict=True)])
            if k == steps:
                best = max(best, _loss(model, x_adv, y, loss_fn))
                break
            x_in = x_adv.clone().requires_grad_(eps > 0)
            with torch.enable_grad():
                loss = loss_fn(model(x_in), y)
                grads = torch.autograd.grad(loss, params + ([x_in] if eps > 0 else []))
            best = max(best, loss.item())
            with torch.no_grad():
                for n, g, a in zip(nu, grads[: len(nu)], steps_w, strict=True):
                    n.add_(g, alpha=(a / g.norm().clamp_min(1e-30)).item())
                _project_layers(nu, radii)
                if eps > 0:
                    moved = x_adv + a_x * geometry.steepest_(grads[-1].clone())
                    x_adv = clamp_box(x + geometry.project_(moved - x, eps), box)
    return best - reference
