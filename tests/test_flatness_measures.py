"""The flatness suite's measures (measure.sharpness, measure.robust_flatness): invariance
to function-preserving rescalings, small-radius limits against the dense Hessian of a
fitted logistic regression, the worst-case ascent's ball, the attack re-run at every
perturbed weight against the closed form, and that each option does something."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advland.core.attacks import optimal_linear, pgd
from advland.core.models import LogisticRegression, per_example_loss
from advland.core.norms import NORMS
from advland.measure.hessian import (
    dense_hessian,
    flat_objective,
    hutchinson_trace,
    lanczos,
    make_hvp,
)
from advland.measure.robust_flatness import (
    relative_sphere,
    robust_flatness_average,
    robust_flatness_worst,
)
from advland.measure.sharpness import (
    adaptive_hessian,
    average_sharpness,
    gaussian_like,
    make_loss,
    normalize_logits,
    scales,
    worst_case,
    worst_sharpness,
)

F64 = torch.float64
LOSS = make_loss(False)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 20-16-16-3 ReLU MLP without BatchNorm, float64, and 48 random examples."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    ).to(F64)
    g = gen(1)
    return net, torch.randn(48, 20, generator=g, dtype=F64), torch.randint(0, 3, (48,), generator=g)


@torch.no_grad()
def rescale_mlp(net: nn.Module, alpha: float) -> None:
    """w_1, b_1 -> alpha w_1, alpha b_1 and w_2 -> w_2 / alpha: the same function (ReLU)."""
    net[0].weight.mul_(alpha)
    net[0].bias.mul_(alpha)
    net[2].weight.div_(alpha)


def conv_bn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """conv -> BatchNorm -> ReLU -> linear, float64, BN with non-trivial running stats."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    ).to(F64)
    g = gen(2)
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.copy_(0.1 * torch.randn(4, generator=g, dtype=F64))
        bn.running_var.copy_(0.5 + torch.rand(4, generator=g, dtype=F64))
        bn.weight.copy_(1 + 0.2 * torch.randn(4, generator=g, dtype=F64))
        bn.bias.copy_(0.1 * torch.randn(4, generator=g, dtype=F64))
    net.eval()
    x = torch.rand(32, 1, 6, 6, generator=g, dtype=F64)
    return net, x, torch.randint(0, 3, (32,), generator=g)


@torch.no_grad()
def rescale_conv(net: nn.Module, alpha: float) -> None:
    """conv -> alpha conv, BN's running mean -> alpha mean, var (and eps) -> alpha^2: the
    same function in eval mode."""
    net[0].weight.mul_(alpha)
    net[0].bias.mul_(alpha)
    net[1].running_mean.mul_(alpha)
    net[1].running_var.mul_(alpha**2)
    net[1].eps *= alpha**2


def pgd_perturb(eps: float, seed: int = 7, box=None):
    """PGD Linf, 3 steps of eps / 2 with a random start from a generator of its own."""
    g = gen(seed)
    return lambda model, x, y: pgd(model, x, y, "linf", eps, 3, eps / 2, box=box, generator=g)


def plain_lambda1(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    loss, theta = flat_objective(net, x, y)
    return lanczos(make_hvp(loss, theta), theta.numel(), 1, iters=40)[0].item()


def invariant_measures(net: nn.Module, x: torch.Tensor, y: torch.Tensor, box) -> dict[str, float]:
    """Every adaptive (eta = 0) and relative measure, each from a fresh generator."""
    return {
        "average": average_sharpness(net, x, y, LOSS, 0.05, "adaptive", 0.0, 4, gen(3)),
        "worst_l2": worst_sharpness(net, x, y, LOSS, 0.05, "l2", "adaptive", 0.0, 16, 6, gen(4)),
        "worst_linf": worst_sharpness(
            net, x, y, LOSS, 0.01, "linf", "adaptive", 0.0, 48, 6, gen(4)
        ),
        "hessian": adaptive_hessian(net, x, y, LOSS, 0.0, 15, 3)["lambda1"],
        "hessian_trace": adaptive_hessian(net, x, y, LOSS, 0.0, 2, 4)["trace"],
        "rflat_avg": robust_flatness_average(
            net, x, y, LOSS, pgd_perturb(0.05, box=box), 0.2, 3, gen(5)
        ),
        "rflat_worst": robust_flatness_worst(
            net, x, y, LOSS, pgd_perturb(0.05, box=box), "linf", 0.05, 0.01, 5, gen(6), box=box
        ),
    }


@pytest.mark.parametrize("arch", ["mlp", "conv_bn"])
def test_adaptive_and_relative_measures_ignore_function_preserving_rescalings(arch):
    net, x, y = mlp() if arch == "mlp" else conv_bn()
    # alpha = 3 grows the MLP's second layer; 1/4 grows the conv before BatchNorm
    rescale, alpha, box = (
        (rescale_mlp, 3.0, None) if arch == "mlp" else (rescale_conv, 0.25, (0.0, 1.0))
    )
    net.eval()
    with torch.no_grad():
        before_out = net(x)
    before, plain_before = invariant_measures(net, x, y, box), plain_lambda1(net, x, y)
    rescale(net, alpha)
    with torch.no_grad():
        torch.testing.assert_close(net(x), before_out, rtol=1e-12, atol=1e-12)
    after, plain_after = invariant_measures(net, x, y, box), plain_lambda1(net, x, y)
    for name, value in before.items():
        assert abs(value) > 1e-6, name  # a real value, not a trivial zero
        assert after[name] == pytest.approx(value, rel=1e-7), name
    assert abs(plain_after / plain_before - 1) > 0.2  # the plain Hessian is not invariant


def fitted_lr(d: int = 8, n: int = 400) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Logistic regression at the minimum of its loss on non-separable data (noisy labels),
    features of different scales so that lambda1 is well separated."""
    g = gen(11)
    x = torch.randn(n, d, generator=g, dtype=F64) * torch.linspace(2.0, 0.5, d, dtype=F64)
    u = torch.rand(n, generator=g, dtype=F64)
    w_true = torch.randn(d, generator=g, dtype=F64)
    y = (x @ w_true + torch.log(u / (1 - u)) > 0).long()
    model = LogisticRegression(d).to(F64)
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=500,
        tolerance_grad=1e-14,
        tolerance_change=0,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = per_example_loss(model(x), y).mean()
        loss.backward()
        return loss

    opt.step(closure)
    grads = torch.autograd.grad(per_example_loss(model(x), y).mean(), list(model.parameters()))
    assert torch.cat([g.flatten() for g in grads]).norm() < 1e-8
    return model, x, y


@pytest.fixture(scope="module")
def lr_model():
    return fitted_lr()


def scaled_hessian(model: nn.Module, x, y, kind: str, eta: float):
    loss, theta = flat_objective(model, x, y)
    t = torch.cat([s.flatten() for s in scales(model, kind, eta)])
    return t[:, None] * dense_hessian(loss, theta) * t[None, :]


@pytest.mark.parametrize("kind,eta", [("plain", 0.0), ("adaptive", 0.0), ("adaptive", 0.1)])
def test_small_rho_limits_on_logistic_regression(lr_model, kind, eta):
    model, x, y = lr_model
    a = scaled_hessian(model, x, y, kind, eta)
    eig = torch.linalg.eigvalsh(a)
    rho, draws = 1e-3, 300
    avg = average_sharpness(model, x, y, LOSS, rho, kind, eta, draws, gen(21))
    # the same draws: rho^2 / 2 mean_j z_j^T A z_j (antithetic pairs leave O(rho^4))
    params = [p.detach() for p in model.parameters()]
    g = gen(21)
    zs = torch.stack(
        [torch.cat([z.flatten() for z in gaussian_like(params, g)]) for _ in range(draws)]
    )
    same_draws = rho**2 / 2 * torch.einsum("jd,de,je->j", zs, a, zs).mean().item()
    assert avg == pytest.approx(same_draws, rel=1e-4)
    # and the expectation, (rho^2 / 2) tr A, within 4 standard deviations (var = 2 tr A^2)
    std = rho**2 / 2 * (2 * (a @ a).trace().item() / draws) ** 0.5
    assert abs(avg - rho**2 / 2 * a.trace().item()) < 4 * std

    worst = worst_sharpness(model, x, y, LOSS, rho, "l2", kind, eta, len(x), 60, gen(22))
    assert worst == pytest.approx(rho**2 / 2 * eig[-1].item(), rel=1e-2)


def test_adaptive_hessian_equals_the_dense_spectrum(lr_model):
    model, x, y = lr_model
    for kind, eta in [("adaptive", 0.0), ("adaptive", 0.05), ("plain", 0.0)]:
        a = scaled_hessian(model, x, y, kind, eta)
        dim = a.shape[0]
        out = adaptive_hessian(model, x, y, LOSS, eta, dim, 50, seed=3, kind=kind)
        assert out["lambda1"] == pytest.approx(torch.linalg.eigvalsh(a)[-1].item(), rel=1e-10)
        # Hutchinson with the same seed on the dense matrix: the same Rademacher vectors
        assert out["trace"] == pytest.approx(
            hutchinson_trace(lambda v, a=a: a @ v, dim, 50, seed=3), rel=1e-10
        )
        assert out["hvps"] == dim + 50
    plain = adaptive_hessian(model, x, y, LOSS, 0.0, 9, 1, kind="plain")["lambda1"]
    adaptive = adaptive_hessian(model, x, y, LOSS, 0.0, 9, 1)["lambda1"]
    assert abs(plain / adaptive - 1) > 0.1


@pytest.mark.parametrize("p", ["l2", "linf"])
@pytest.mark.parametrize("kind", ["plain", "adaptive"])
def test_worst_case_stays_in_its_ball_and_beats_random_deltas(p, kind):
    net, x, y = mlp()
    rho, c = 0.05, scales(net, kind, 0.01)
    t = torch.cat([s.flatten() for s in c])
    result = worst_case(net, x, y, LOSS, rho, p, c, 8, gen(31))
    u = torch.cat([d.flatten() for d in result.delta]) / t
    order = {"l2": 2, "linf": float("inf")}[p]
    assert torch.linalg.vector_norm(u, order) <= rho * (1 + 1e-12)
    assert torch.linalg.vector_norm(u, order) > 0.5 * rho  # it went somewhere
    with torch.no_grad():
        base = LOSS(net(x), y).item()
    g, w0 = gen(32), [q.detach().clone() for q in net.parameters()]
    randoms = []
    for _ in range(5):
        u_rand = NORMS[p].sample_ball(torch.zeros(1, t.numel(), dtype=F64), rho, g)[0]
        sizes = [q.numel() for q in w0]
        with torch.no_grad():
            for q, w, d in zip(net.parameters(), w0, (t * u_rand).split(sizes), strict=True):
                q.copy_(w + d.view_as(w))
            randoms.append(LOSS(net(x), y).item() - base)
            for q, w in zip(net.parameters(), w0, strict=True):
                q.copy_(w)
    assert result.increase >= max(randoms)
    assert result.increase > 0


def test_robust_flatness_reruns_the_attack_as_the_closed_form(lr_model):
    """Linf without a box, PGD on LR reaches x - eps y_pm sign(w) exactly: at every
    perturbed weight its robust loss is the closed form's (attacks.optimal_linear)."""
    model, x, y = lr_model
    eps, xi, draws = 0.1, 0.3, 6
    closed = lambda m, xs, ys: optimal_linear(xs, ys, m.w.detach(), "linf", eps)  # noqa: E731
    g_pgd = gen(41)
    by_pgd = lambda m, xs, ys: pgd(m, xs, ys, "linf", eps, 5, eps, box=None, generator=g_pgd)  # noqa: E731
    value_pgd = robust_flatness_average(model, x, y, LOSS, by_pgd, xi, draws, gen(42))
    value_closed = robust_flatness_average(model, x, y, LOSS, closed, xi, draws, gen(42))
    assert value_pgd == pytest.approx(value_closed, rel=1e-12)
    x_fixed = closed(model, x, y)  # the attack at w only, not re-run
    fixed = robust_flatness_average(
        model, x, y, LOSS, lambda m, xs, ys: x_fixed, xi, draws, gen(42)
    )
    # per draw and example the closed form is the worst case in the ball: never below
    assert value_closed > fixed + 1e-6


def test_robust_flatness_worst_first_order_on_logistic_regression(lr_model):
    """Small xi: max over ||nu_l|| <= xi ||w_l|| of R(w + nu) - R(w) ~ xi sum_l ||w_l|| ||g_l||,
    g the gradient of the robust loss (Danskin: at the fixed worst-case inputs)."""
    model, x, y = lr_model
    eps, xi = 0.1, 1e-4
    closed = lambda m, xs, ys: optimal_linear(xs, ys, m.w.detach(), "linf", eps)  # noqa: E731
    x_star = closed(model, x, y)
    params = list(model.parameters())
    grads = torch.autograd.grad(LOSS(model(x_star), y), params)
    first_order = xi * sum(p.norm() * g.norm() for p, g in zip(params, grads, strict=True)).item()
    worst = robust_flatness_worst(model, x, y, LOSS, closed, "linf", eps, xi, 30, gen(51), box=None)
    assert worst == pytest.approx(first_order, rel=1e-2)
    # the relative sphere: ||nu_l|| = xi ||w_l|| for every tensor
    for nu, p in zip(relative_sphere(model, 0.3, gen(52)), params, strict=True):
        assert nu.norm().item() == pytest.approx(0.3 * p.norm().item(), rel=1e-12)


def test_logit_normalization():
    logits = torch.randn(5, 4, dtype=F64)
    z = normalize_logits(logits)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5, dtype=F64))
    torch.testing.assert_close(z.sum(1), torch.zeros(5, dtype=F64))
    y = torch.randint(0, 2, (5,))
    with pytest.raises(ValueError, match="3 classes"):
        make_loss(True)(torch.randn(5, dtype=F64), y)  # binary: one logit
    with pytest.raises(ValueError, match="3 classes"):
        make_loss(True)(torch.randn(5, 2, dtype=F64), y)


def test_every_option_changes_the_value_and_batching_does_not():
    net, x, y = mlp()
    avg = lambda loss, kind, eta, bs=None: average_sharpness(  # noqa: E731
        net, x, y, loss, 0.05, kind, eta, 3, gen(61), batch_size=bs
    )
    base = avg(LOSS, "adaptive", 0.01)
    assert avg(make_loss(True), "adaptive", 0.01) != pytest.approx(base, rel=1e-3)
    assert avg(LOSS, "plain", 0.01) != pytest.approx(base, rel=1e-3)
    assert avg(LOSS, "adaptive", 0.5) != pytest.approx(base, rel=1e-3)
    assert avg(LOSS, "adaptive", 0.01, bs=10) == pytest.approx(base, rel=1e-12)
    worst = lambda p, kind, m: worst_sharpness(net, x, y, LOSS, 0.05, p, kind, 0.01, m, 4, gen(62))  # noqa: E731
    ref = worst("l2", "adaptive", 48)
    for other in (
        worst("l2", "plain", 48),
        worst("linf", "adaptive", 48),
        worst("l2", "adaptive", 12),
    ):
        assert other != pytest.approx(ref, rel=1e-3)
    step = lambda a: robust_flatness_worst(  # noqa: E731
        net, x, y, LOSS, pgd_perturb(0.05), "linf", 0.05, 0.02, 4, gen(63), input_step=a, box=None
    )
    assert step(0.001) != pytest.approx(step(0.05), rel=1e-3)


def test_measures_run_in_eval_mode_and_restore_the_model():
    net, x, y = conv_bn()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    calls = {
        "average": lambda: average_sharpness(net, x, y, LOSS, 0.05, "adaptive", 0.0, 2, gen(71)),
        "worst": lambda: worst_sharpness(
            net, x, y, LOSS, 0.05, "linf", "plain", 0.0, 16, 3, gen(72)
        ),
        "hessian": lambda: adaptive_hessian(net, x, y, LOSS, 0.01, 5, 2, dtype=torch.float32)[
            "lambda1"
        ],
        "rflat_avg": lambda: robust_flatness_average(
            net, x, y, LOSS, pgd_perturb(0.05, box=(0, 1)), 0.2, 2, gen(73)
        ),
        "rflat_worst": lambda: robust_flatness_worst(
            net, x, y, LOSS, pgd_perturb(0.05, box=(0, 1)), "l2", 0.3, 0.01, 3, gen(74)
        ),
    }
    for name, call in calls.items():
        net.eval()
        in_eval = call()
        net.train()
        in_train = call()
        assert net.training, name
        assert in_train == in_eval, name  # BatchNorm used its running statistics
        for key, value in net.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)
        assert all(p.grad is None for p in net.parameters()), name


def test_antithetic_pairs_cancel_the_linear_term():
    """A loss linear in the weights (the mean logit of a linear model) at a point that is
    not stationary: +-delta cancel exactly, the average sharpness is 0 (one-sided draws
    would give rho g.c z, of order 1e-2 here)."""
    model = LogisticRegression(6).to(F64)
    with torch.no_grad():
        model.linear.weight.copy_(torch.randn(1, 6, generator=gen(81), dtype=F64))
    x, y = torch.randn(30, 6, generator=gen(82), dtype=F64) + 1, torch.zeros(30, dtype=torch.long)
    linear = lambda logits, ys: logits.mean()  # noqa: E731
    for kind in ("plain", "adaptive"):
        value = average_sharpness(model, x, y, linear, 0.05, kind, 0.1, 3, gen(83))
        assert abs(value) < 1e-14
