"""Hessians: HVPs against autograd and finite differences, backends against each other,
theory's closed forms against autograd, and a convex quadratic whose spectrum is known."""

from __future__ import annotations

import pytest
import torch

from advland.measure import theory
from advland.measure.hessian import (
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


def lr_problem(n_features: int = 12, n: int = 300):
    """Logistic regression on random inputs, its weights fitted roughly by a few
    gradient steps (so that the Hessian has a spread spectrum)."""
    from advland.core.models import LogisticRegression

    g = torch.Generator().manual_seed(3)
    model = LogisticRegression(n_features).double()
    x = torch.rand(n, n_features, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.3 * torch.randn(n, generator=g, dtype=torch.float64) > 0.5).long()
    torch.nn.init.normal_(model.linear.weight, generator=g)
    return model, x, y


def test_saved_lr_spectrum_is_eigvalsh_of_the_dense_autograd_hessian(tmp_path):
    import pandas as pd

    from advland.core.config import Run
    from advland.core.sections import HessianConfig
    from advland.measure.hessian import save_spectra, sharpness_run

    model, x, y = lr_problem()
    run = Run(dataset="mnist2", model="lr", norm="l2", noise="rand", eps=0.0)
    cfg = HessianConfig(
        top_k=3, backend="auto", lanczos_iters=5, pyhessian=False, trace_samples=1,
        spectrum_k="all",
    )  # fmt: skip
    loss, theta = flat_objective(model, x, y)
    h = torch.autograd.functional.hessian(loss, theta)  # plain autograd, not torch.func
    eig = torch.linalg.eigvalsh(h).flip(0)
    metrics, spectrum = sharpness_run(model, run, x, y, lambda m, xb, yb: xb, cfg, 1.0)
    save_spectra({0: spectrum}, tmp_path / "v.csv", tmp_path / "v.pt")
    saved = pd.read_csv(tmp_path / "v.csv")
    assert len(saved) == theta.numel() == 13 and saved["rank"].tolist() == list(range(1, 14))
    saved_eig = torch.tensor(saved.eigenvalue.to_numpy())
    torch.testing.assert_close(saved_eig, eig, rtol=1e-10, atol=1e-14)
    assert saved.residual.isna().all() and set(saved.method) == {"exact"}
    assert metrics["lambda1"] == saved.eigenvalue[0]
    vectors = torch.load(tmp_path / "v.pt", weights_only=True)[0]
    assert vectors.shape == (2, 13)
    for v, lam in zip(vectors, eig[:2], strict=True):
        torch.testing.assert_close(h @ v, lam * v, rtol=0, atol=1e-12)
        assert v[v.abs().argmax()] > 0  # the sign convention
    again = tmp_path / "again.pt"
    save_spectra({0: spectrum}, tmp_path / "again.csv", again)
    assert again.read_bytes() == (tmp_path / "v.pt").read_bytes()  # bytes depend on numbers only


def test_lanczos_top20_on_the_cnn_within_the_residual_bound():
    """Every Ritz value lies within its residual of an eigenvalue (|lambda - theta| <= r);
    the converged ones are the top-k eigenvalues themselves, and the Ritz vectors'
    residuals ||H v - theta v|| are the ones reported."""
    net, x, y = small_cnn()
    loss, theta = flat_objective(net.double(), x.double(), y)
    h = dense_hessian(loss, theta)
    eig = torch.linalg.eigvalsh(h)
    hvp = make_hvp(loss, theta)
    for iters, want_converged in ((25, 1), (100, 18)):
        ritz = lanczos_ritz(hvp, theta.numel(), 20, iters, vectors=20)
        assert len(ritz.values) == 20
        for value, residual in zip(ritz.values, ritz.residuals, strict=True):
            assert (eig - value).abs().min() <= residual * (1 + 1e-9) + 1e-12
        converged = ritz.residuals <= 1e-8 * ritz.values.abs()
        assert converged.sum() >= want_converged
        top = eig.flip(0)[:20]
        torch.testing.assert_close(ritz.values[converged], top[converged], rtol=1e-7, atol=1e-10)
        explicit = (ritz.vectors @ h - ritz.values[:, None] * ritz.vectors).norm(dim=1)
        torch.testing.assert_close(explicit, ritz.residuals, rtol=1e-3, atol=1e-9)
        if iters == 25:
            assert (ritz.residuals > 1e-2 * ritz.values.abs()).any()  # some are flagged
