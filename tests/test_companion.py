"""Companion studies: the collapse threshold, the Lipschitz ratios, the toy surfaces."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from conftest import REPO
from test_hardening import run_stage

from advland.data import Dataset
from advland.measure.theory import (
    collapse_eps,
    l2_adversarial_hessian,
    l2_adversarial_loss,
    linf_adversarial_loss,
)
from advland.studies.collapse import CollapseConfig, collapse_study
from advland.studies.smoothness import OBJECTIVES, SmoothnessConfig, ratios, sign_change_point
from advland.studies.toy import (
    ToyConfig,
    attacked_loss,
    jumps,
    linear_loss,
    smoothed,
    smoothed_grad,
    surfaces,
    swish_loss,
)

BOX = (0.0, 1.0)


def binary_pixels(n=40, d=3, seed=0):
    """Pixels in {0, 1} (so the box clips), class 1 brighter on average, 60% positives."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=gen) < 0.6).long()
    bright = torch.tensor([0.8, 0.6, 0.3])[:d]
    p = torch.where(y[:, None] == 1, bright, 0.2)
    return (torch.rand(n, d, generator=gen) < p).double(), y


def objective(norm, box):
    if norm == "l2":
        return lambda t, x, y, eps: l2_adversarial_loss(t, x, y, eps)
    return lambda t, x, y, eps: linf_adversarial_loss(t, x, y, eps, box)


def best_descent(x, y, eps, norm, box, step=1e-4, n_dirs=3000):
    """min over unit directions u of J(z + step u) - J(z) at z = (0, logit p): brute force
    over random directions and the coordinate axes."""
    p = y.double().mean()
    z = torch.zeros(x.shape[1] + 1, dtype=torch.float64)
    z[-1] = torch.log(p / (1 - p))
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(n_dirs, len(z), generator=gen, dtype=torch.float64)
    eye = torch.eye(len(z), dtype=torch.float64)
    u = torch.cat([u / u.norm(dim=1, keepdim=True), eye, -eye])
    f = objective(norm, box)
    base = f(z, x, y, eps)
    return min(float(f(z + step * d, x, y, eps) - base) for d in u)


@pytest.mark.parametrize(("norm", "box"), [("linf", None), ("l2", None), ("linf", BOX)])
def test_collapse_threshold_against_brute_force(norm, box):
    x, y = binary_pixels()
    eps_star, exact = collapse_eps(x, y, norm, box)
    assert exact
    assert best_descent(x, y, 0.97 * eps_star, norm, box) < -1e-8  # w = 0 is not optimal
    assert best_descent(x, y, 1.03 * eps_star, norm, box) > -1e-12  # no direction descends


def test_no_box_closed_form_and_the_box_raise_the_threshold():
    x, y = binary_pixels()
    gap = x[y == 1].mean(0) - x[y == 0].mean(0)
    assert collapse_eps(x, y, "linf")[0] == pytest.approx(float(gap.abs().max()) / 2)
    assert collapse_eps(x, y, "l2")[0] == pytest.approx(float(gap.norm()) / 2)
    assert collapse_eps(x, y, "linf", BOX)[0] > collapse_eps(x, y, "linf")[0] + 0.01
    assert collapse_eps(x, y, "l2", BOX) == (collapse_eps(x, y, "l2")[0], False)


def test_training_collapses_above_the_prediction_only(tmp_path):
    x, y = binary_pixels(n=64)
    data = Dataset(x.float().view(-1, 1, 1, 3), y, x.float().view(-1, 1, 1, 3), y, 2)
    cfg = CollapseConfig.model_validate(
        {
            "factors": [0.5, 2.0],
            "bisect": 0,
            "max_doublings": 0,
            "w_tol": 0.01,
            "train": {
                "epochs": 30,
                "batch_size": 16,
                "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
                              "schedule": "cosine"},
            },
            "pgd": {"steps": 10, "rel_step_size": 2.5},
            "seed": 0,
        }
    )  # fmt: skip
    summary = collapse_study(data, cfg, tmp_path / "t.csv")
    table = __import__("pandas").read_csv(tmp_path / "t.csv")
    for case, c in summary.model_dump().items():
        assert c["measured"] == pytest.approx(2 * c["predicted"]), case
        assert c["bracket_lo"] == pytest.approx(0.5 * c["predicted"]), case
    assert (table[table.collapsed].clean_acc == 100 * y.float().mean().item()).all()


def test_l2_ratio_settles_at_the_hessian_and_linf_grows_across_a_sign_change():
    x, y = binary_pixels(n=50)
    theta = torch.tensor([1.5, -0.7, 0.9, 0.1], dtype=torch.float64)
    u = torch.nn.functional.normalize(torch.randn(2, 4, dtype=torch.float64), dim=1)
    rows = ratios(OBJECTIVES["l2"], theta, x, y, 0.3, [1e-3, 1e-6], u)
    hessian = l2_adversarial_hessian(theta, x, y, 0.3)
    for row in rows:
        expected = float((hessian @ u[row["direction"]]).norm())
        assert row["ratio"] == pytest.approx(expected, rel=1e-2)
    point, crossing = sign_change_point(theta, x, y, 1e-12, u)
    assert (crossing[:, int((point == 1e-12).nonzero()[0])] < 0).all()
    linf = ratios(OBJECTIVES["linf"], point, x, y, 0.3, [1e-3, 1e-6], crossing)
    big, small = (sum(r["ratio"] for r in linf if r["radius"] == rad) for rad in (1e-3, 1e-6))
    assert small / big == pytest.approx(1e3, rel=0.05)  # R ~ jump / r


def toy_cfg(**kw) -> ToyConfig:
    base = {"x": [1.0, 0.5], "y": 0, "eps": 2.0, "extent": 6.0, "points": 61, "gamma": 1.0,
            "pgd": {"steps": 100, "rel_step_size": 2.5}, "h": 1e-4}  # fmt: skip
    return ToyConfig.model_validate(base | kw)


@pytest.mark.parametrize("y", [0, 1])
@pytest.mark.parametrize("kind", ["l2", "linf"])
def test_toy_closed_forms_against_pgd(kind, y):
    cfg = toy_cfg(y=y)
    w = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.tensor(cfg.x, dtype=torch.float64)
    pgd_linear = attacked_loss(w, x, y, cfg.eps, kind, False, cfg.pgd)
    torch.testing.assert_close(
        pgd_linear, linear_loss(w, x, y, cfg.eps, kind), rtol=1e-6, atol=1e-8
    )
    assert (linear_loss(w, x, y, cfg.eps, kind) > linear_loss(w, x, y, cfg.eps, "standard")).all()
    pgd_swish, exact = (
        attacked_loss(w, x, y, cfg.eps, kind, True, cfg.pgd),
        swish_loss(w, x, y, cfg.eps, kind),
    )
    assert (pgd_swish <= exact + 1e-9).all()  # no attack beats the exact worst case
    close = (exact - pgd_swish).abs() <= 2e-3  # PGD's fixed step circles an inner optimum
    # PGD from x climbs to the nearer end of u's interval: for y = 1 the one minimum of
    # swish is always reached; for y = 0 the larger end is missed on some weights
    assert close.all() if y == 1 else 0.7 < close.float().mean() < 1
    best = torch.stack([swish_loss(w, x, y, cfg.eps * t, kind) for t in (0.5, 1.0)])
    assert (best[1] >= best[0] - 1e-12).all()  # a larger ball is at least as bad


def test_quadrature_of_a_quadratic_gives_the_known_curvature():
    a, gamma = 2.0, 1.5
    axis = torch.linspace(-10, 10, 401, dtype=torch.float64)
    w1, w2 = torch.meshgrid(axis, axis, indexing="ij")
    loss = a * (w1**2 + w2**2) / 2
    f = smoothed(loss, axis, gamma)
    curvature = a * gamma / (a + gamma)
    inner = (w1.abs() <= 3) & (w2.abs() <= 3)
    centre = f[200, 200]
    expected = curvature * (w1**2 + w2**2) / 2
    torch.testing.assert_close((f - centre)[inner], expected[inner], rtol=0, atol=1e-8)
    # log of the Gaussian integral: the constant, too
    const = -math.log(2 * math.pi / (a + gamma))
    assert float(centre) == pytest.approx(const, abs=1e-8)
    grad = smoothed_grad(loss, axis, gamma, (0.7, -1.2))
    torch.testing.assert_close(grad, curvature * torch.tensor([0.7, -1.2], dtype=torch.float64))


def test_linf_gradient_jumps_across_an_axis_and_the_smoothed_one_does_not():
    cfg = toy_cfg()
    grids, axis = surfaces(cfg)
    rows = {(r["model"], r["loss"], r["across"]): r for r in jumps(grids, axis, cfg)}
    # linear, y = 0: d/dw1 softplus(w.x + eps ||w||_1) jumps by 2 eps sigmoid(w.x + eps ||w||_1)
    s = 1 / (1 + math.exp(-(0.5 + cfg.eps)))
    assert rows["linear", "linf", "w1=0"]["jump_loss"] == pytest.approx(2 * cfg.eps * s, rel=1e-3)
    for (_, loss, _), r in rows.items():
        assert r["jump_smoothed"] < 1e-3
        if loss != "linf":
            assert r["jump_loss"] < 1e-2
    assert rows["swish", "linf", "w2=0"]["jump_loss"] > 1.0


def test_a_bad_companion_value_is_a_one_line_error_naming_the_key(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["companion"]["toy"]["points"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = run_stage(tmp_path, "toy.py", table="toy.csv", metrics="toy.json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "companion.toy.points: Input should be greater than or equal to 5 (got 2)" in done.stderr
    assert not (tmp_path / "toy.csv").exists()
    params["companion"]["toy"]["points"] = 61
    params["companion"]["linear"]["mnist2"]["smoothness"]["points"]["l2"]["run"] = "nope"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = run_stage(
        tmp_path, "smoothness.py", dataset="mnist2", data="d.npz", models="models",
        table="s.csv", metrics="s.json",
    )  # fmt: skip
    assert done.returncode == 2
    assert "companion.linear.mnist2.smoothness.points.l2.run: 'nope'" in done.stderr


def test_smoothness_config_names_every_objective():
    assert set(SmoothnessConfig.model_fields["points"].annotation.model_fields) == set(OBJECTIVES)


def test_search_doubles_until_a_collapse_then_bisects(monkeypatch):
    import advland.studies.collapse as collapse

    def fake(data, norm, eps, box, cfg):  # collapses from eps = 3.3 on
        return {"eps": eps, "collapsed": eps >= 3.3}

    monkeypatch.setattr(collapse, "train_at", fake)
    cfg = CollapseConfig.model_construct(factors=[0.5, 1.0], bisect=2, max_doublings=2)
    rows = collapse.search(None, "l2", False, cfg, 1.0)
    assert [r["eps"] for r in rows] == [0.5, 1.0, 2.0, 4.0, 3.0, 3.5]
    cfg = CollapseConfig.model_construct(factors=[0.5, 1.0], bisect=0, max_doublings=1)
    assert not any(r["collapsed"] for r in collapse.search(None, "l2", False, cfg, 1.0))
