"""Hessians: HVPs against autograd and finite differences, backends against each other,
theory's closed forms against autograd, and a convex quadratic whose spectrum is known."""

from __future__ import annotations

import pytest
import torch

from advland import theory
from advland.hessian import (
    CountingHVP,
    dense_hessian,
    exact_spectrum,
    flat_objective,
    hutchinson_trace,
    lanczos,
    lanczos_ritz,
    make_hvp,
    pyhessian_top,
)


def small_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)
    )
    x, y = torch.rand(64, 1, 6, 6), torch.randint(0, 3, (64,))
    return net, x, y


def test_hvp_matches_dense_autograd_and_finite_differences():
    net, x, y = small_net()
    loss, theta = flat_objective(net.double(), x.double(), y)
    v = torch.randn(theta.numel(), dtype=torch.float64)
    hv = make_hvp(loss, theta)(v)
    torch.testing.assert_close(hv, dense_hessian(loss, theta) @ v, rtol=1e-8, atol=1e-10)
    h = 1e-5
    grad = torch.func.grad(loss)
    fd = (grad(theta + h * v) - grad(theta - h * v)) / (2 * h)
    torch.testing.assert_close(hv, fd, rtol=1e-5, atol=1e-7)


def test_exact_lanczos_and_pyhessian_agree_on_a_small_net(capsys):
    net, x, y = small_net()
    net.double()
    loss, theta = flat_objective(net, x.double(), y)
    exact = torch.tensor(exact_spectrum(loss, theta, 3)["top"])
    hvp = CountingHVP(make_hvp(loss, theta))
    lanc = lanczos(hvp, theta.numel(), 3, iters=60)
    ref = pyhessian_top(net, x.double(), y, 3)
    err_l = ((lanc - exact).abs() / exact.abs()).max().item()
    err_p = ((torch.tensor(ref["top"]) - exact).abs() / exact.abs()).max().item()
    with capsys.disabled():
        print(
            f"\n  top-3 exact {exact.tolist()}\n  Lanczos rel. err {err_l:.2e} ({hvp.calls} HVPs),"
            f" PyHessian rel. err {err_p:.2e} ({ref['hvps']} HVPs)"
        )
    assert err_l < 1e-6
    assert err_p < 2e-2
    assert net.training  # PyHessian leaves eval mode; pyhessian_top restores train mode
    assert all(p.grad is None for p in net.parameters())


def small_cnn():
    """The pipeline's 4-conv CNN at width 2 on 8x8 images (464 parameters), BatchNorm in
    eval mode with running statistics from a few training-mode passes."""
    from advland.core.models import build_model

    torch.manual_seed(0)
    net = build_model("cnn", (1, 8, 8), 10, width=2)
    x, y = torch.rand(96, 1, 8, 8), torch.randint(0, 10, (96,))
    with torch.no_grad():
        for i in range(0, 96, 32):
            net(x[i : i + 32])
    return net.eval(), x, y


def test_lanczos_on_the_cnn_matches_its_exact_spectrum_within_the_residuals():
    net, x, y = small_cnn()
    loss, theta = flat_objective(net.double(), x.double(), y)
    eig = torch.linalg.eigvalsh(dense_hessian(loss, theta))
    exact = eig.flip(0)[:3]
    hvp = make_hvp(loss, theta)
    converged = lanczos_ritz(hvp, theta.numel(), 3, iters=120)
    torch.testing.assert_close(converged.values, exact, rtol=1e-8, atol=1e-10)
    assert (converged.residuals / exact.abs()).max() < 1e-6
    early = lanczos_ritz(hvp, theta.numel(), 3, iters=6)
    assert (early.residuals / early.values.abs()).max() > 1e-3  # 6 steps: not converged
    for value, residual in zip(early.values, early.residuals, strict=True):
        assert (eig - value).abs().min() <= residual * (1 + 1e-9)  # |lambda - theta| <= r
    net32 = net.float()
    loss32, theta32 = flat_objective(net32, x, y)
    top32 = lanczos(make_hvp(loss32, theta32), theta32.numel(), 3, iters=120)
    torch.testing.assert_close(top32.double(), exact, rtol=1e-4, atol=1e-6)


def test_convex_quadratic_spectrum_comes_back():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    eigs = torch.linspace(0.1, 10.0, 30, dtype=torch.float64)
    a = q @ torch.diag(eigs) @ q.T

    def loss(t):
        return 0.5 * t @ a @ t

    theta = torch.randn(30, dtype=torch.float64, generator=g)
    top = exact_spectrum(loss, theta, 3)
    torch.testing.assert_close(torch.tensor(top["top"], dtype=torch.float64), eigs.flip(0)[:3])
    assert top["trace"] == pytest.approx(eigs.sum().item())
    torch.testing.assert_close(lanczos(make_hvp(loss, theta), 30, 3, 30), eigs.flip(0)[:3])
    assert hutchinson_trace(make_hvp(loss, theta), 30, 2000) == pytest.approx(
        eigs.sum().item(), rel=0.05
    )


@pytest.mark.parametrize("w_scale", [1e-3, 1.0, 50.0])
def test_closed_form_hessians_equal_autograd(w_scale):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(200, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (200,), generator=g)
    w = torch.randn(12, generator=g, dtype=torch.float64)
    theta = torch.cat([w / w.norm() * w_scale, torch.tensor([0.3], dtype=torch.float64)])
    for eps in (0.0, 0.1, 0.7):
        auto = dense_hessian(lambda t, eps=eps: theory.l2_adversarial_loss(t, x, y, eps), theta)
        closed = theory.l2_adversarial_hessian(theta, x, y, eps)
        assert (auto - closed).abs().max() <= 1e-6 * max(1.0, auto.abs().max().item())
    auto = dense_hessian(lambda t: theory.fixed_input_loss(t, x, y), theta)
    assert (auto - theory.fixed_input_hessian(theta, x, y)).abs().max() <= 1e-6 * max(
        1.0, auto.abs().max().item()
    )


def test_adversarial_term_sharpens():
    """The eps (I - uu^T)/||w|| term makes the L2 adversarial Hessian exceed the fixed-input one."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(300, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (300,), generator=g)
    theta = torch.randn(9, generator=g, dtype=torch.float64)
    tops = [
        torch.linalg.eigvalsh(theory.l2_adversarial_hessian(theta, x, y, e))[-1].item()
        for e in (0.0, 0.5, 1.0)
    ]
    assert tops[0] < tops[1] < tops[2]
