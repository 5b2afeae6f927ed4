"""Attacks and noise: gradients, projections, the closed-form optimum, the ball sampler."""

from __future__ import annotations

import math

import pytest
import torch

from advland.core.attacks import ascent_direction, fgsm, input_grad, optimal_linear, pgd
from advland.core.models import (
    LogisticRegression,
    ResNet18,
    build_model,
    is_linear,
    per_example_loss,
)
from advland.core.noise import random_noise
from advland.core.norms import NORMS, flat_norm
from advland.measure.landscape import StackedLogisticRegression


def trained_linear(d: int = 20, n: int = 200, seed: int = 0):
    """A logistic regression fitted by a few hundred full-batch steps on separable-ish data."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    w_true = torch.randn(d, generator=g)
    y = ((x - 0.5) @ w_true > 0).long()
    model = LogisticRegression(d)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        per_example_loss(model(x), y).mean().backward()
        opt.step()
    return model, x, y


def finite_difference_grad(model, x, y, h=1e-6):
    x = x.double()
    grad = torch.zeros_like(x)
    for j in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, j] = h
        grad[:, j] = (per_example_loss(model(x + e), y) - per_example_loss(model(x - e), y)) / (
            2 * h
        )
    return grad


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_linear_ascent_direction_matches_finite_differences(norm):
    model, x, y = trained_linear()
    model.double()
    fd = finite_difference_grad(model, x[:10], y[:10])
    expected = fd.sign() if norm == "linf" else fd / fd.norm(dim=1, keepdim=True)
    closed_form = model.ascent_direction(y[:10], norm)
    torch.testing.assert_close(closed_form, expected, rtol=1e-6, atol=1e-9)


class AutogradOnly(torch.nn.Module):
    """The same model without its closed-form direction: PGD's generic autograd path."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


@pytest.mark.parametrize(
    "norm,eps,steps,step_size", [("linf", 0.3, 12, 0.02), ("l2", 1.0, 12, 0.1)]
)
def test_linear_fast_pgd_equals_the_autograd_loop(norm, eps, steps, step_size):
    """Few steps, so many pixels stop short of their bound: the collapsed Linf step and
    the three-pass L2 step (attacks.linear_steps) must still give the step-by-step loop."""
    model, x, y = trained_linear()
    runs = [
        pgd(m, x, y, norm, eps, steps, step_size, generator=torch.Generator().manual_seed(3))
        for m in (model, AutogradOnly(model))
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-6)
    moved = (runs[1] - x).abs()
    assert ((moved > 1e-3) & (moved < eps - 1e-3)).any()  # not all at the bound: a real test
    assert ascent_direction(model, x, y, norm).shape == x.shape


def test_autograd_input_gradient_matches_finite_differences():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()
    x, y = torch.rand(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    grad = input_grad(net, x, y)
    torch.testing.assert_close(grad, finite_difference_grad(net, x, y), rtol=1e-6, atol=1e-9)


def test_l2_pgd_converges_to_closed_form_without_box():
    model, x, y = trained_linear()
    x_pgd = pgd(
        model,
        x,
        y,
        "l2",
        0.5,
        steps=200,
        step_size=0.25,
        box=None,
        generator=torch.Generator().manual_seed(0),
    )
    x_opt = optimal_linear(x, y, model.w.detach(), "l2", 0.5)
    assert (x_pgd - x_opt).abs().max() < 1e-4


def test_linf_pgd_reaches_box_constrained_closed_form():
    model, x, y = trained_linear()
    eps = 0.3
    x_pgd = pgd(
        model,
        x,
        y,
        "linf",
        eps,
        steps=100,
        step_size=0.01,
        generator=torch.Generator().manual_seed(0),
    )
    x_opt = optimal_linear(x, y, model.w.detach(), "linf", eps, box=(0.0, 1.0))
    assert (x_pgd - x_opt).abs().max() < 1e-4
    # and it is the worst case: no loss higher than the closed form's
    assert per_example_loss(model(x_pgd), y).max() <= per_example_loss(model(x_opt), y).max() + 1e-6


def test_fgsm_is_optimal_for_a_linear_model_in_linf():
    model, x, y = trained_linear()
    x_opt = optimal_linear(x, y, model.w.detach(), "linf", 0.1, box=(0.0, 1.0))
    assert (fgsm(model, x, y, "linf", 0.1) - x_opt).abs().max() < 1e-6


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_stays_in_ball_and_box_for_a_net(norm):
    torch.manual_seed(0)
    net = ResNet18(in_channels=1, n_classes=10, width=4).eval()
    x, y = torch.rand(8, 1, 12, 12), torch.randint(0, 10, (8,))
    eps = 0.5 if norm == "l2" else 0.1
    x_adv = pgd(
        net, x, y, norm, eps, steps=5, step_size=eps / 2, generator=torch.Generator().manual_seed(1)
    )
    delta = x_adv - x
    size = flat_norm(delta) if norm == "l2" else delta.abs().flatten(1).amax(1)
    assert size.max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert per_example_loss(net(x_adv), y).mean() > per_example_loss(net(x), y).mean()


def test_projection_onto_l2_ball():
    delta = torch.randn(100, 3, 4, 4) * 3
    p = NORMS["l2"].project_(delta.clone(), 1.5)
    assert flat_norm(p).max() <= 1.5 + 1e-6
    inside = flat_norm(delta).flatten() <= 1.5
    torch.testing.assert_close(p[inside], delta[inside])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_attacks_at_w_zero_are_defined(norm):
    model = LogisticRegression(10)  # w = 0, b = 0
    x, y = torch.rand(5, 10), torch.tensor([0, 1, 0, 1, 1])
    for x_adv in (
        pgd(model, x, y, norm, 0.3, 10, 0.05, generator=torch.Generator().manual_seed(0)),
        optimal_linear(x, y, model.w.detach(), norm, 0.3),
    ):
        assert torch.isfinite(x_adv).all()


def test_l2_ball_radius_distribution():
    """Uniform in the ball of dimension d: (r / eps)^d ~ U(0, 1). Kolmogorov-Smirnov at 1%."""
    d, eps, n = 50, 2.0, 20000
    delta = NORMS["l2"].sample_ball(torch.zeros(n, d), eps, torch.Generator().manual_seed(0))
    u = (flat_norm(delta).flatten().double() / eps) ** d
    ks = (torch.sort(u).values - torch.arange(1, n + 1, dtype=torch.float64) / n).abs().max().item()
    assert ks < 1.63 / math.sqrt(n)
    # directions are isotropic: the mean is near 0
    assert delta.mean(0).abs().max() < 0.05


def test_linf_noise_is_uniform_in_the_cube_then_clipped():
    x = torch.full((20000, 4), 0.5)
    noisy = random_noise(x, "linf", 0.2, generator=torch.Generator().manual_seed(0))
    d = noisy - x
    assert d.abs().max() <= 0.2 and abs(d.std().item() - 0.2 / math.sqrt(3)) < 2e-3
    near_edge = random_noise(
        torch.zeros(100, 4), "linf", 0.2, generator=torch.Generator().manual_seed(0)
    )
    assert near_edge.min() >= 0


def test_gaussian_noise_matches_uniform_variance():
    x = torch.full((20000, 30), 0.5)
    u = random_noise(x, "l2", 1.0, "uniform", torch.Generator().manual_seed(0)) - x
    g = random_noise(x, "l2", 1.0, "gaussian", torch.Generator().manual_seed(0)) - x
    assert abs(u.var().item() / g.var().item() - 1) < 0.03


def test_eps_zero_is_the_identity_and_runs_no_attack():
    from advland.core.perturb import make_perturb
    from advland.core.sections import AttackConfig

    def model(x):
        raise AssertionError("the model was called at eps 0")

    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])
    for noise in ("adv", "rand"):
        perturb = make_perturb(
            noise, "linf", 0.0, AttackConfig(steps=5, rel_step_size=2.5), "uniform", None
        )
        assert perturb(model, x, y) is x


def test_is_linear_holds_for_logistic_regression_alone_and_its_stacked_form():
    assert is_linear(build_model("lr", (1, 4, 4), 2))
    assert is_linear(StackedLogisticRegression(torch.zeros(3, 17)))
    assert not is_linear(build_model("cnn", (1, 8, 8), 10, 4))
    assert not is_linear(build_model("resnet18", (1, 8, 8), 10, 4))
