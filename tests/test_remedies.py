"""Remedies: eps warm-up, AWP and EntropySGD against closed forms, and runs' train overrides."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import train_config

from advland.core.config import TAGS, parse_params
from advland.core.errors import ParamsError
from advland.core.models import build_model, per_example_loss
from advland.core.optim import EntropySGD, make_optimizer
from advland.core.perturb import make_perturb
from advland.core.sections import AttackConfig
from advland.remedies import AWP, EpsWarmup, awp_parameters, warmup_eps
from advland.report import remedies as remedies_report
from advland.report.data import Inputs
from advland.train import fit, gradient_epochs

REPO = Path(__file__).resolve().parents[1]


def toy_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (0.3 * torch.rand(n, 1, 28, 28, generator=g)).clamp(0, 1)
    x[:, 0, 10:14] += 0.5 * y.view(-1, 1, 1)
    return x.clamp(0, 1), y


# eps warm-up ---------------------------------------------------------------------


def test_warmup_formulas():
    eps, emax, T = 0.3, 0.6, 10
    assert [warmup_eps("linear", eps, emax, t, T) for t in (0, 2, 5, 9)] == pytest.approx(
        [0, 0.12, 0.3, 0.3]
    )
    cos = [warmup_eps("cosine", eps, emax, t, T) for t in (0, 2, 5, 9)]
    assert cos == pytest.approx([0, 0.3 * (1 - math.cos(math.pi / 5)), 0.3, 0.3])
    assert warmup_eps("constant", eps, emax, 0, T) == eps


@pytest.mark.parametrize("attack", [{"step_size": 0.01}, {"rel_step_size": 2.5}])
def test_warmup_rebuilds_the_attack_with_eps_t_and_scaled_step(attack):
    """Linf PGD on logistic regression reaches the corner: ||delta||_inf = eps(t) exactly
    (inside the box), with 2 steps that reach eps only if the step scales with eps(t)."""
    model = build_model("lr", [1, 28, 28], 2)
    torch.nn.init.normal_(model.linear.weight, generator=torch.Generator().manual_seed(0))
    x = torch.full((8, 1, 28, 28), 0.5)
    y = torch.arange(8) % 2
    eps = 0.3
    cfg = AttackConfig(steps=2, random_start=False, **attack)
    step = cfg.step(eps)  # 0.01 absolute: 2 steps reach 0.02 of 0.3 at full eps

    def build(e, scale=1.0):
        a = cfg if scale == 1 or cfg.step_size is None else cfg.model_copy(
            update={"step_size": cfg.step_size * scale}
        )  # fmt: skip
        return make_perturb("adv", "linf", e, a, "uniform", None)

    warm = EpsWarmup(build, "linear", eps, 2.0, 10)
    for epoch, want in ((0, 0.0), (1, 0.06), (3, 0.18), (7, 0.3)):
        warm.epoch_start(epoch)
        reach = min(want, 2 * step * want / eps)
        assert (warm(model, x, y) - x).abs().max().item() == pytest.approx(reach, abs=1e-6)


def test_warmup_changes_training():
    x, y = toy_data()
    model_a, model_b = (build_model("lr", [1, 28, 28], 2) for _ in range(2))
    cfg = train_config(epochs=2)
    attack = AttackConfig(steps=3, rel_step_size=2.5)

    def build(e, scale=1.0):
        return make_perturb("adv", "linf", e, attack, "uniform", None)

    gens = lambda: (torch.Generator().manual_seed(0),)  # noqa: E731
    fit(model_a, x, y, cfg, build(0.3), gens())
    warm = EpsWarmup(build, "linear", 0.3, 2.0, 2)
    fit(model_b, x, y, cfg, warm, gens(), hooks=[warm])
    assert warm.current == pytest.approx(0.3)  # epoch 1: min(0.3, 0.6 * 1 / 2)
    assert not torch.allclose(model_a.linear.weight, model_b.linear.weight)


# AWP ----------------------------------------------------------------------------


def test_awp_perturbs_each_layer_by_gamma_of_its_norm_and_restores():
    torch.manual_seed(0)
    model = build_model("cnn", [1, 28, 28], 10, 4)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    before = {k: v.clone() for k, v in model.state_dict().items()}
    awp = AWP(gamma=0.01)
    awp.epoch_start(0)
    awp.before_forward(model, x, y)
    perturbed = set()
    for name, p in model.named_parameters():
        change = (p - before[name]).norm() / before[name].norm().clamp_min(1e-12)
        if any(p is q for q in awp_parameters(model)):
            assert change.item() == pytest.approx(0.01, rel=1e-4), name
            perturbed.add(name)
        else:
            assert change.item() == 0, name  # biases and BatchNorm untouched
    assert perturbed and all(name.endswith("weight") for name in perturbed)
    for name, b in model.named_buffers():
        assert torch.equal(b, before[name]), name  # BN statistics untouched
    awp.after_backward(model)
    for name, p in model.named_parameters():
        assert torch.allclose(p, before[name], atol=1e-7), name


def test_awp_on_logistic_regression_perturbs_w_not_b_and_changes_the_gradient():
    """v = gamma ||w|| g / ||g|| (ascent), so the loss rises; the training gradient is the
    one at w + v, different from plain training's at w."""
    x, y = toy_data(32)
    model = build_model("lr", [1, 28, 28], 2)
    torch.nn.init.normal_(model.linear.weight, std=0.05, generator=torch.Generator().manual_seed(1))
    assert awp_parameters(model) == [model.linear.weight]

    def grad_and_loss():
        model.zero_grad()
        loss = per_example_loss(model(x), y).mean()
        loss.backward()
        return model.linear.weight.grad.clone(), loss.item()

    g_plain, loss_plain = grad_and_loss()
    w0, b0 = model.linear.weight.detach().clone(), model.linear.bias.detach().clone()
    awp = AWP(gamma=0.5)
    awp.epoch_start(0)
    awp.before_forward(model, x, y)
    v = model.linear.weight.detach() - w0
    assert torch.allclose(v, 0.5 * w0.norm() * g_plain / g_plain.norm(), atol=1e-7)
    assert torch.equal(model.linear.bias.detach(), b0)
    g_awp, loss_awp = grad_and_loss()
    awp.after_backward(model)
    assert loss_awp > loss_plain
    assert (g_awp - g_plain).norm() > 0.05 * g_plain.norm()
    assert torch.allclose(model.linear.weight, w0)


def test_gradient_epochs_count_every_weight_gradient():
    assert gradient_epochs(train_config(epochs=20)) == 20
    assert gradient_epochs(train_config(epochs=20, awp={"gamma": 0.01, "start_epoch": 5})) == 35
    esgd = {"name": "entropy_sgd", "entropy": {"inner_steps": 5}}
    assert gradient_epochs(train_config(epochs=4, optimizer=esgd)) == 20


def test_awp_start_epoch_defers_it():
    x, y = toy_data(8)
    model = build_model("lr", [1, 28, 28], 2)
    torch.nn.init.normal_(model.linear.weight)
    w0 = model.linear.weight.detach().clone()
    awp = AWP(gamma=0.1, start_epoch=2)
    awp.epoch_start(1)
    awp.before_forward(model, x, y)
    assert torch.equal(model.linear.weight, w0)


# EntropySGD ----------------------------------------------------------------------


def quadratic_step(a, w0, **kw) -> tuple[torch.Tensor, EntropySGD]:
    """One EntropySGD step on L(w) = sum a_i w_i^2 / 2; returns (grad used, optimizer)."""
    w = torch.nn.Parameter(w0.clone())
    opt = EntropySGD([w], lr=0.1, **kw)

    def closure():
        w.grad = a * w.detach()

    closure()
    opt.step(closure)
    return w.grad.clone(), opt, w


def test_entropy_sgd_gradient_is_the_local_entropy_gradient_on_a_quadratic():
    """Without noise the SGLD mean converges to mu = gamma w / (a + gamma), so
    grad F = gamma (w - mu) = a gamma / (a + gamma) w (F's curvature a gamma / (a + gamma));
    the step uses grad F / gamma = w - mu."""
    a, gamma = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64), 1.0
    w0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    grad, _, w = quadratic_step(
        a, w0, inner_steps=400, inner_lr=0.05, noise=0.0, alpha=0.75, gamma0=gamma, gamma1=0.0
    )
    assert torch.allclose(gamma * grad, a * gamma / (a + gamma) * w0, atol=1e-10)
    assert torch.allclose(w.detach(), w0 - 0.1 * grad)  # the outer SGD step, at w


def test_entropy_sgd_finite_inner_loop_matches_the_recursion():
    """L = 3 steps: w'_k - m = (1 - eta (a + gamma))^k (w - m), mu the alpha-average."""
    a, gamma, eta, alpha = torch.tensor([2.0], dtype=torch.float64), 0.5, 0.1, 0.75
    w0 = torch.tensor([1.0], dtype=torch.float64)
    grad, _, _ = quadratic_step(
        a, w0, inner_steps=3, inner_lr=eta, noise=0.0, alpha=alpha, gamma0=gamma, gamma1=0.0
    )
    m, r = gamma * w0 / (a + gamma), 1 - eta * (a + gamma)
    mu = w0.clone()
    for k in range(1, 4):
        mu = (1 - alpha) * mu + alpha * (m + r**k * (w0 - m))
    assert torch.allclose(grad, w0 - mu, atol=1e-12)


def test_entropy_sgd_noise_samples_the_gibbs_measure_at_temperature_s2_over_2():
    """Discrete SGLD with noise s: stationary mean m, variance s^2 / (c (2 - eta c)),
    c = a + gamma (-> s^2 / (2c) = T / c as eta -> 0): checked over 20000 coordinates."""
    torch.manual_seed(0)
    n, a, gamma, eta, s = 20000, 3.0, 1.0, 0.05, 0.2
    w0 = torch.full((n,), 1.0, dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    opt = EntropySGD([w], lr=0.1, inner_steps=300, inner_lr=eta, noise=s, alpha=1.0,
                     gamma0=gamma, gamma1=0.0)  # fmt: skip

    def closure():
        w.grad = a * w.detach()

    closure()
    opt.step(closure)
    mu = w0 - w.grad  # alpha = 1: mu is the last inner iterate
    c = a + gamma
    assert mu.mean().item() == pytest.approx(gamma / c, abs=3 * s / math.sqrt(c * n))
    assert mu.var().item() == pytest.approx(s**2 / (c * (2 - eta * c)), rel=0.05)


def test_entropy_sgd_scopes_gamma():
    a, w0 = torch.tensor([1.0]), torch.tensor([1.0])
    _, opt, _ = quadratic_step(a, w0, inner_steps=2, gamma0=0.1, gamma1=0.5)
    assert opt.param_groups[0]["t"] == 1 and opt.gamma(opt.param_groups[0]) == pytest.approx(0.15)


def test_entropy_sgd_in_fit_recomputes_the_attack_in_every_inner_step():
    x, y = toy_data(32)
    model = build_model("lr", [1, 28, 28], 2)
    entropy = {"inner_steps": 4, "inner_lr": 0.1, "noise": 0.0, "gamma0": 1.0}
    cfg = train_config(
        epochs=2, batch_size=16, optimizer={"name": "entropy_sgd", "lr": 1.0, "entropy": entropy}
    )
    assert isinstance(make_optimizer(model.parameters(), cfg.optimizer), EntropySGD)
    pgd = make_perturb("adv", "l2", 1.0, AttackConfig(steps=3, rel_step_size=2.5), "uniform", None)
    calls = []

    def counted(m, xb, yb):
        calls.append(m.linear.weight.detach().clone())
        return pgd(m, xb, yb)

    history, _ = fit(model, x, y, cfg, counted, (torch.Generator().manual_seed(0),))
    assert len(calls) == 2 * 2 * 4  # epochs x batches x L: the attack at every inner w'
    assert not torch.equal(calls[0], calls[1])  # ... at the moving inner weights
    assert history[-1]["train_loss"] < history[0]["train_loss"]


# runs' train overrides -------------------------------------------------------------

AWP_RUN = {"dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv", "eps": 1,
           "tag": "awp", "train": {"awp": {"gamma": 0.01}, "optimizer": {"lr": 0.05}}}  # fmt: skip


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_overrides_deep_merge_over_the_model_settings(raw):
    raw["runs"]["mnist2-lr-l2-adv-1-awp"] = AWP_RUN
    params = parse_params(raw)
    run = params.run("mnist2-lr-l2-adv-1-awp")
    cfg, base = params.train_for(run), params.train["mnist2"]["lr"]
    assert cfg.awp.gamma == 0.01 and cfg.optimizer.lr == 0.05
    assert cfg.optimizer.momentum == base.optimizer.momentum and cfg.epochs == base.epochs
    assert base.awp.gamma == 0  # the shared settings are untouched
    assert {run: 1}[run] == 1  # a run with overrides stays hashable


@pytest.mark.parametrize(
    "train, tag, expected",
    [
        (
            {"awp": {"gama": 1}},
            "awp",
            r"runs\.mnist2-lr-l2-adv-1-awp\.train\.awp\.gama: Extra inputs",
        ),
        ({"epochs": 0}, "awp", r"runs\.mnist2-lr-l2-adv-1-awp\.train\.epochs: .*greater than 0"),
        ({"optimizer": {"name": "entropy_sgd"}}, "esgd", r"runs\..*\.train\.optimizer.*entropy"),
        ({"awp": {"gamma": 0.1}}, None, r"runs\.mnist2-lr-l2-adv-1\.train: .*needs a tag"),
    ],
)
def test_bad_overrides_name_the_key(raw, train, tag, expected):
    bad = copy.deepcopy(raw)
    key = "mnist2-lr-l2-adv-1" + (f"-{tag}" if tag else "")
    bad["runs"][key] = {k: v for k, v in AWP_RUN.items() if k != "tag"} | {"train": train}
    if tag:
        bad["runs"][key]["tag"] = tag
    with pytest.raises(ParamsError, match=expected):
        parse_params(bad)


# the report's remedies study ------------------------------------------------------


def test_the_report_knows_every_tag_the_schema_checks():
    assert set(remedies_report.REMEDIES) == set(TAGS)


def remedy_frames(tmp_path, remedy: dict, curve_plain, curve_remedy, tag="awp", g_epochs=None):
    """A plain and a tagged run of one setting (one seed), with training logs."""
    base = {"dataset": "mnist2", "model": "lr", "norm": "l2", "noise": "adv", "eps": 1.0,
            "seed": 0, "lambda1": 2.0, "trace": 3.0, "robust_train_acc": 99.0,
            "robust_test_acc": 98.0, "robust_gap": 1.0, "epochs": len(curve_plain),
            "train_seconds": 1.0}  # fmt: skip
    plain = base | {"run_id": "p", "tag": ""}
    other = base | {"run_id": "r", "tag": tag, "epochs": len(curve_remedy)} | remedy
    if g_epochs:
        other["gradient_epochs"] = g_epochs
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    for run_id, curve in (("p", curve_plain), ("r", curve_remedy)):
        rows = [{"seed": 0, "epoch": e + 1, "train_loss": v} for e, v in enumerate(curve)]
        pd.DataFrame(rows).to_csv(logs / f"{run_id}.csv", index=False)
    frame = pd.DataFrame([plain, other])
    inputs = Inputs(tmp_path, logs, {}, {}, tmp_path, tmp_path)
    return frame, frame, inputs


@pytest.mark.parametrize(
    "tag, remedy, expected",
    [
        ("awp", {"lambda1": 1.5, "robust_gap": 0.5}, True),
        ("awp", {"lambda1": 1.5, "robust_gap": 1.5}, False),
        ("warmup_cos", {"lambda1": 1.5, "robust_test_acc": 97.95}, True),
        ("warmup_lin", {"lambda1": 1.5, "robust_test_acc": 97.8}, False),
        ("warmup_lin", {"lambda1": 2.5, "robust_test_acc": 99.0}, False),
    ],
)
def test_remedy_verdicts_follow_the_numbers(tmp_path, tag, remedy, expected):
    runs, seeds, inputs = remedy_frames(tmp_path, remedy, [1, 0.5, 0.4], [1, 0.5, 0.4], tag)
    (verdict,) = remedies_report.study(runs, seeds, inputs).verdicts
    assert verdict.reproduced is expected and verdict.subject == "r"
    assert (tmp_path / "remedies.png").is_file()


def test_esgd_verdict_counts_gradient_epochs(tmp_path):
    """The target is the larger last loss, 0.3. Plain reaches it in epoch 3; EntropySGD
    (L = 5 gradients per epoch) in its 1st epoch, which is 5 gradient epochs: not fewer.
    Had epochs been counted as outer steps (1 < 3) it would have passed."""
    plain = [1.0, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    runs, seeds, inputs = remedy_frames(
        tmp_path, {"robust_test_acc": 98.5}, plain, [0.3, 0.3], "esgd", g_epochs=10
    )
    (v,) = remedies_report.study(runs, seeds, inputs).verdicts
    assert v.numbers["target_loss"] == pytest.approx(0.3)
    assert (v.numbers["grad_epochs"], v.numbers["grad_epochs_plain"]) == (5, 3)
    assert not v.reproduced
    runs, seeds, inputs = remedy_frames(
        tmp_path, {"robust_test_acc": 98.5}, plain, [0.3, 0.3], "esgd", g_epochs=2
    )  # L = 1: 1 gradient epoch < 3, and more robust
    (v,) = remedies_report.study(runs, seeds, inputs).verdicts
    assert v.reproduced


def test_seed_agreement_skips_a_seed_where_one_run_failed(tmp_path):
    """Seed 1 trained plainly but failed with AWP (left out of the per-seed rows, as
    collect_seeds leaves failed seeds out): the verdict counts seed 0 alone."""
    runs, seeds, inputs = remedy_frames(
        tmp_path, {"lambda1": 1.5, "robust_gap": 0.5}, [1, 0.5], [1, 0.5]
    )
    plain_seed1 = seeds[seeds.run_id == "p"].assign(seed=1)
    log = pd.read_csv(inputs.logs / "p.csv")
    pd.concat([log, log.assign(seed=1)]).to_csv(inputs.logs / "p.csv", index=False)
    (v,) = remedies_report.study(runs, pd.concat([seeds, plain_seed1]), inputs).verdicts
    assert v.reproduced and (v.seeds_agree, v.n_seeds) == (1, 1)
