"""Filter-normalized directions and the landscape evaluation."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from advland.core.attacks import pgd
from advland.core.models import LogisticRegression, ResNet18, per_example_loss
from advland.core.norms import flat_norm
from advland.measure.hessian import dense_hessian, flat_objective, top_eigenvectors
from advland.measure.landscape import (
    StackedLogisticRegression,
    curve_1d,
    curve_summary,
    direction_scale,
    eigen_directions,
    evaluate_points,
    filter_normalized_direction,
    landscape_run,
    surface_2d,
)


def test_each_filter_of_the_direction_has_that_filters_norm():
    torch.manual_seed(0)
    net = ResNet18(in_channels=3, n_classes=10, width=4)
    d = filter_normalized_direction(net, torch.Generator().manual_seed(0))
    offset = 0
    for p in net.parameters():
        part = d[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if p.ndim <= 1:
            assert part.abs().max() == 0  # biases and BN get no direction by default
        else:
            torch.testing.assert_close(flat_norm(part).flatten(), flat_norm(p.detach()).flatten())


def test_lr_direction_has_norm_of_w_and_bias_flag():
    model = LogisticRegression(30)
    torch.nn.init.normal_(model.linear.weight)
    model.linear.bias.data.fill_(2.0)
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    assert d[:-1].norm().item() == pytest.approx(model.w.norm().item(), rel=1e-6) and d[-1] == 0
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0), include_bias=True)
    assert abs(d[-1].item()) == pytest.approx(2.0)


def _lr_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = LogisticRegression(16)
    model.linear.weight.data = torch.randn(1, 16, generator=g)
    x = torch.rand(300, 16, generator=g)
    y = (x @ model.w.detach() > x @ model.w.detach()).long() | (
        torch.rand(300, generator=g) > 0.5
    ).long()
    return model, x, y


def test_stacked_lr_equals_one_model_at_a_time():
    model, x, y = _lr_problem()
    thetas = torch.randn(5, 17)
    stacked = StackedLogisticRegression(thetas)
    logits = stacked(x.repeat(5, 1)).view(5, -1)
    for i, t in enumerate(thetas):
        torch.testing.assert_close(logits[i], x @ t[:-1] + t[-1])
    attack = dict(norm="l2", eps=0.5, steps=10, step_size=0.1, random_start=False)
    x_stacked = pgd(stacked, x.repeat(5, 1), y.repeat(5), **attack).view(5, 300, 16)
    single = LogisticRegression(16)
    for i, t in enumerate(thetas):
        single.linear.weight.data, single.linear.bias.data = t[None, :-1].clone(), t[-1:].clone()
        torch.testing.assert_close(x_stacked[i], pgd(single, x, y, **attack))


def test_landscape_at_alpha_zero_is_the_models_loss():
    model, x, y = _lr_problem()
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    splits = {"train": (x, y), "test": (x[:50], y[:50])}

    def perturb(m, xb, yb):
        return pgd(m, xb, yb, "linf", 0.1, 10, 0.02, random_start=False)

    curve = curve_1d(model, d, torch.linspace(-1, 1, 5), splits, perturb, None)
    centre = curve[curve.alpha == 0].iloc[0]
    with torch.no_grad():
        assert centre.train_clean_loss == pytest.approx(
            per_example_loss(model(x), y).mean().item(), rel=1e-5
        )
        adv = perturb(model, x, y)
        assert centre.train_obj_loss == pytest.approx(
            per_example_loss(model(adv), y).mean().item(), rel=1e-5
        )
    assert (curve.train_obj_loss >= curve.train_clean_loss - 1e-6).all()


def test_net_point_by_point_path_matches_the_model():
    torch.manual_seed(0)
    net = ResNet18(in_channels=1, n_classes=3, width=4).eval()
    x, y = torch.rand(10, 1, 8, 8), torch.randint(0, 3, (10,))
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    frame = evaluate_points(net, theta[None], {"train": (x, y)}, None, {"train": x})
    with torch.no_grad():
        assert frame.train_clean_loss[0] == pytest.approx(
            per_example_loss(net(x), y).mean().item(), rel=1e-5
        )


def test_curvature_of_a_quadratic_comes_back():
    alphas = torch.linspace(-1, 1, 41)
    curve = pd.DataFrame(
        {"alpha": alphas.numpy().round(6), "train_obj_loss": (3.0 * alphas**2 + 0.5).numpy()}
    )
    s = curve_summary(curve)
    assert s["curvature_1d"] == pytest.approx(6.0, rel=1e-4)
    assert s["rise_1d"] == pytest.approx(3.0, rel=1e-5) and s["centre_loss"] == pytest.approx(0.5)


def test_2d_grid_resumes_from_partial_file(tmp_path):
    model, x, y = _lr_problem()
    g = torch.Generator().manual_seed(0)
    d1, d2 = filter_normalized_direction(model, g), filter_normalized_direction(model, g)
    splits = {"train": (x, y)}
    alphas = torch.linspace(-1, 1, 5)
    full = surface_2d(
        model, d1, d2, alphas, splits, None, {"train": x}, tmp_path / "a.csv", rows_per_chunk=4
    )
    partial = tmp_path / "b.csv"
    full.iloc[:12].to_csv(partial, index=False)  # as if killed after three chunks
    resumed = surface_2d(
        model, d1, d2, alphas, splits, None, {"train": x}, partial, rows_per_chunk=4
    )
    pd.testing.assert_frame_equal(resumed, full)
    assert len(full) == 25


def test_direction_scale_is_the_norm_of_every_filter_normalized_direction():
    torch.manual_seed(0)
    net = ResNet18(in_channels=3, n_classes=10, width=4)
    for bias in (False, True):
        d = filter_normalized_direction(net, torch.Generator().manual_seed(1), bias)
        assert d.norm().item() == pytest.approx(direction_scale(net, bias), rel=1e-5)


def test_curve_along_the_top_eigenvector_is_the_quadratic_lambda1():
    """Near alpha = 0, L(theta + a d) = L0 + a g.d + a^2 lambda1 ||d||^2 / 2 along
    d = ||w|| v1 with inputs fixed; a random direction curves less."""
    model, x, y = _lr_problem()
    model.double()
    x = x.double()
    loss, theta = flat_objective(model, x, y)
    h = dense_hessian(loss, theta)
    lam = torch.linalg.eigvalsh(h)[-1].item()
    (d, _) = eigen_directions(model, top_eigenvectors(h, 2))
    assert d.norm().item() == pytest.approx(model.w.norm().item(), rel=1e-9)
    step = 0.02
    alphas = torch.tensor([-step, 0.0, step], dtype=torch.float64)
    splits = {"train": (x, y)}
    curve = curve_1d(model, d, alphas, splits, None, {"train": x}).train_obj_loss.to_numpy()
    second = (curve[0] - 2 * curve[1] + curve[2]) / step**2
    assert second == pytest.approx(lam * model.w.norm().item() ** 2, rel=2e-3)
    assert curve[1] == pytest.approx(loss(theta).item(), rel=1e-6)
    rand = filter_normalized_direction(model, torch.Generator().manual_seed(0)).double()
    curve = curve_1d(model, rand, alphas, splits, None, {"train": x}).train_obj_loss.to_numpy()
    assert (curve[0] - 2 * curve[1] + curve[2]) / step**2 < 0.8 * second


def test_landscape_run_adds_the_eigen_curves_only_when_asked(tmp_path):
    from advland.core.sections import LandscapeConfig

    model, x, y = _lr_problem()
    splits = {"train": (x, y), "test": (x[:50], y[:50])}
    loss, theta = flat_objective(model, x, y)
    vectors = top_eigenvectors(dense_hessian(loss, theta).double(), 2)
    base = dict(
        alpha=1.0, points_1d=5, points_2d=3, direction_seed=0, include_bias=False,
        attack="fixed", pgd={"steps": 2, "rel_step_size": 2.5}, n_train=None, n_test=None,
    )  # fmt: skip
    partials = (tmp_path / "a.csv", tmp_path / "b.csv")
    frames, summary = landscape_run(
        model, splits, lambda m, xb, yb: xb, False, LandscapeConfig(**base), partials, vectors
    )
    assert [len(f) for f in frames] == [5, 9, 0, 0] and "eigen_curvature_1d" not in summary
    cfg = LandscapeConfig(**base, eigen_points_1d=7, eigen_points_2d=3, eigen_alpha=0.5)
    frames, summary = landscape_run(
        model, splits, lambda m, xb, yb: xb, False, cfg, partials, vectors
    )
    assert [len(f) for f in frames] == [5, 9, 7, 9]
    assert frames[2].alpha.min() == -0.5 and summary["eigen_curvature_1d"] > 0
    assert summary["eigen_centre_loss"] == pytest.approx(summary["centre_loss"])
